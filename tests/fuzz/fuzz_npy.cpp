// Fuzzes the .npy parser: any bytes give a tensor of exactly the declared size, or an error.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attn/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto t = attn::io::parse_npy(bytes, "fuzz");
  if (t.ok()) {
    volatile float sink = 0;
    for (float v : t->values()) sink = sink + v;  // touch every value: ASan checks the bounds
  }
  return 0;
}
