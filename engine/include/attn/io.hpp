// Compatibility header: all of attn's file formats at once. New code includes only what it
// uses: attn/safetensors.hpp (weights files), attn/npy.hpp (activations) or attn/layer.hpp
// (PyTorch attention layers mapped onto LayerConfig + Weights); attn/attn.hpp includes everything.
#pragma once

#include "attn/layer.hpp"
#include "attn/npy.hpp"
#include "attn/safetensors.hpp"
