// The Open Inference Protocol (KServe v2) as attn serve speaks it, without sockets: an infer
// request's headers and body decoded into a typed request, and a response encoded, both as
// JSON and as Triton's binary tensor data extension. Fuzzed by tests/fuzz/fuzz_serve_request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attn::serve {

/// What the served model takes and gives: x [.., d_in] -> y [.., d_out]; at most
/// context_length tokens per sequence.
struct ModelShape {
  std::int64_t d_in = 0;
  std::int64_t d_out = 0;
  std::int64_t context_length = 0;
};

/// A Triton sequence id: an unsigned integer or a string (0 and "" mean "no sequence", as in
/// Triton).
struct SequenceId {
  bool is_string = false;
  std::uint64_t number = 0;
  std::string text;

  /// Returns a key unique across both kinds ("n:42", "s:abc").
  std::string key() const { return is_string ? "s:" + text : "n:" + std::to_string(number); }
};

/// One decoded infer request. x: [batch * seq_len, d_in] floats, row-major; rank 2 means
/// shape [seq_len, d_in] (batch 1), rank 3 [batch, seq_len, d_in].
struct InferRequest {
  std::string id;
  int rank = 2;
  std::int64_t batch = 1;
  std::int64_t seq_len = 0;
  std::vector<float> x;
  std::optional<SequenceId> sequence;  ///< set for a stateful request
  bool sequence_start = false;
  bool sequence_end = false;
  bool binary_output = false;  ///< return y as binary data (binary_data / binary_data_output)

  std::int64_t tokens() const { return batch * seq_len; }
};

/// The outcome of decoding: a request, or an HTTP status (400 malformed, 413 too large) and a
/// message for the client.
struct Decoded {
  InferRequest request;
  int status = 200;
  std::string error;

  bool ok() const { return status == 200; }
};

/// Decodes a POST /v2/models/{name}/infer body. `header_length` is the value of the
/// Inference-Header-Content-Length header when the client sent one (then the body is that many
/// bytes of JSON followed by the binary tensors). `max_request_bytes` bounds the body (413).
/// Never throws; every malformed input gives status 400 and a message naming the field.
Decoded decode_infer_request(std::string_view body, std::optional<std::string_view> header_length,
                             const ModelShape& model, std::size_t max_request_bytes) noexcept;

/// An encoded infer response: the body, its content type, and for binary output the length of
/// its JSON part (to send as Inference-Header-Content-Length).
struct EncodedResponse {
  std::string body;
  std::string content_type;
  std::optional<std::size_t> header_length;
};

/// Encodes y ([request.tokens(), d_out] floats) as the response to `request`, in the request's
/// rank (y [seq_len, d_out] or [batch, seq_len, d_out]).
EncodedResponse encode_infer_response(const InferRequest& request, std::string_view model_name,
                                      std::span<const float> y, std::int64_t d_out);

/// Returns {"error": message} as JSON text.
std::string error_json(std::string_view message);

/// Appends the shortest decimal text that reads back as exactly `v` ("NaN", "Infinity" as
/// quoted strings are not JSON numbers: non-finite values are written as null).
void append_float(std::string& out, float v);

}  // namespace attn::serve
