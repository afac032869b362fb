// Fuzzes attn serve's request decoding (headers + JSON or binary body -> typed request) and the
// response encoding of what it accepts: any bytes give a request of exactly the declared size,
// or a 400/413 with a message; nothing throws, aborts or reads out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.hpp"

// Input layout: byte 0 = flags (bit 0: send Inference-Header-Content-Length; bits 1-2: d_in
// 1, 2, 3 or 4), bytes 1-2 = the header value (little-endian), then the body.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::uint8_t flags = data[0];
  const std::string header = std::to_string(data[1] | (data[2] << 8));
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  attn::serve::ModelShape model;
  model.d_in = 1 + ((flags >> 1) & 3);
  model.d_out = 3;
  model.context_length = 8;
  const auto decoded = attn::serve::decode_infer_request(
      body, (flags & 1) ? std::optional<std::string_view>(header) : std::nullopt, model, 4096);
  if (decoded.ok()) {
    const auto& r = decoded.request;
    if (r.x.size() != static_cast<std::size_t>(r.tokens() * model.d_in)) std::abort();
    if (r.seq_len > model.context_length || (r.sequence && r.batch != 1)) std::abort();
    volatile float sink = 0;
    for (const float v : r.x) sink = sink + v;  // touch every value: ASan checks the bounds
    const std::vector<float> y(static_cast<std::size_t>(r.tokens() * model.d_out), 0.5f);
    const auto enc = attn::serve::encode_infer_response(r, "attn", y, model.d_out);
    if (enc.body.empty()) std::abort();
  } else if (decoded.status != 400 && decoded.status != 413) {
    std::abort();
  }
  return 0;
}
