// Fuzzes the safetensors reader and the layer loader: any bytes must give a file whose every
// tensor reads in bounds, or an error; never a crash or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attn/layer.hpp"
#include "attn/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto file = attn::io::SafetensorsFile::from_bytes(bytes, "fuzz");
  if (!file.ok()) return 0;
  for (const auto& t : file->tensors()) {
    (void)file->read(t.name);
    (void)file->raw(t);
  }
  (void)attn::io::load_layer(file.value());
  attn::io::LayerOptions o;
  o.num_heads = 2;
  o.prefix = "h.0";
  (void)attn::io::load_layer(file.value(), o);
  return 0;
}
