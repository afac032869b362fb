// Umbrella header: the whole product API in one include. It leaves out the teaching aids
// (attn/chapter/reference.hpp, attn/chapter/random.hpp) and the benchmark probes
// (attn/probe.hpp), which are installed beside it and included by name.
#pragma once

#include "attn/config.hpp"
#include "attn/engine.hpp"
#include "attn/layer.hpp"
#include "attn/npy.hpp"
#include "attn/runtime.hpp"
#include "attn/safetensors.hpp"
#include "attn/status.hpp"
#include "attn/tensor.hpp"
#include "attn/weights.hpp"
