// Decoding and encoding of KServe v2 infer bodies (JSON and Triton's binary tensor extension).
#include "protocol.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

namespace attn::serve {
namespace {

using nlohmann::json;

// Deeper JSON than this is refused before parsing: a request needs 4 levels (object, inputs
// array, input object, data array) plus nesting of `data` by the tensor's rank (3).
constexpr int kMaxJsonDepth = 16;

Decoded fail(int status, std::string message) {
  Decoded d;
  d.status = status;
  d.error = std::move(message);
  return d;
}

// Returns the deepest nesting of arrays and objects outside strings.
int json_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > kMaxJsonDepth) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// Reads a bool parameter; absent is false. Returns false (and sets `error`) on another type.
bool read_bool(const json& params, const char* name, bool& value, std::string& error) {
  const auto it = params.find(name);
  if (it == params.end()) return true;
  if (!it->is_boolean()) {
    error = std::string("parameter '") + name + "' must be a boolean";
    return false;
  }
  value = it->get<bool>();
  return true;
}

// Appends the numbers of a (possibly nested) JSON array to `out`; false on a non-number.
bool flatten_numbers(const json& data, std::vector<float>& out, std::size_t limit, int depth) {
  if (depth > 4) return false;
  for (const json& v : data) {
    if (v.is_array()) {
      if (!flatten_numbers(v, out, limit, depth + 1)) return false;
    } else if (v.is_number()) {
      if (out.size() >= limit) return false;
      out.push_back(static_cast<float>(v.get<double>()));
    } else {
      return false;
    }
  }
  return true;
}

// Parses the decimal text of a non-negative integer header value.
bool parse_size(std::string_view text, std::size_t& value) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && end == text.data() + text.size();
}

Decoded decode(std::string_view body, std::optional<std::string_view> header_length,
               const ModelShape& model, std::size_t max_request_bytes) {
  if (body.size() > max_request_bytes) {
    return fail(413, "request body of " + std::to_string(body.size()) + " bytes exceeds " +
                         std::to_string(max_request_bytes) + " (--max-request-bytes)");
  }
  std::string_view json_text = body, binary;
  if (header_length) {
    std::size_t n = 0;
    if (!parse_size(*header_length, n)) {
      return fail(400, "Inference-Header-Content-Length '" + std::string(*header_length) +
                           "' is not a byte count");
    }
    if (n > body.size()) {
      return fail(400, "Inference-Header-Content-Length " + std::to_string(n) +
                           " exceeds the body's " + std::to_string(body.size()) + " bytes");
    }
    json_text = body.substr(0, n);
    binary = body.substr(n);
  }
  if (json_depth(json_text) > kMaxJsonDepth) {
    return fail(400, "request JSON nests deeper than " + std::to_string(kMaxJsonDepth));
  }
  const json doc = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (doc.is_discarded()) return fail(400, "request body is not valid JSON");
  if (!doc.is_object()) return fail(400, "request body must be a JSON object");

  Decoded out;
  InferRequest& r = out.request;
  if (const auto it = doc.find("id"); it != doc.end()) {
    if (!it->is_string()) return fail(400, "'id' must be a string");
    r.id = it->get<std::string>();
  }

  // Request parameters: Triton's sequence fields and binary_data_output.
  if (const auto it = doc.find("parameters"); it != doc.end()) {
    if (!it->is_object()) return fail(400, "'parameters' must be an object");
    const json& p = *it;
    if (const auto s = p.find("sequence_id"); s != p.end()) {
      SequenceId id;
      if (s->is_number_unsigned()) {
        id.number = s->get<std::uint64_t>();
      } else if (s->is_number_integer()) {
        return fail(400, "parameter 'sequence_id' must not be negative");
      } else if (s->is_string()) {
        id.is_string = true;
        id.text = s->get<std::string>();
        if (id.text.size() > 256) return fail(400, "parameter 'sequence_id' is over 256 bytes");
      } else {
        return fail(400, "parameter 'sequence_id' must be an unsigned integer or a string");
      }
      if (id.is_string ? !id.text.empty() : id.number != 0) r.sequence = std::move(id);
    }
    std::string error;
    if (!read_bool(p, "sequence_start", r.sequence_start, error) ||
        !read_bool(p, "sequence_end", r.sequence_end, error) ||
        !read_bool(p, "binary_data_output", r.binary_output, error)) {
      return fail(400, error);
    }
    if (!r.sequence && (r.sequence_start || r.sequence_end)) {
      return fail(400, "sequence_start/sequence_end given without a non-zero 'sequence_id'");
    }
  }

  // Inputs: exactly one, "x", FP32, [seq_len, d_in] or [batch, seq_len, d_in].
  const auto inputs = doc.find("inputs");
  if (inputs == doc.end() || !inputs->is_array()) return fail(400, "'inputs' must be an array");
  if (inputs->size() != 1) {
    return fail(400, "expected exactly one input ('x'), got " + std::to_string(inputs->size()));
  }
  std::size_t binary_used = 0;
  const json& in = (*inputs)[0];
  if (!in.is_object()) return fail(400, "inputs[0] must be an object");
  const auto name = in.find("name");
  if (name == in.end() || !name->is_string()) return fail(400, "inputs[0].name must be a string");
  if (name->get<std::string>() != "x") {
    return fail(400, "unknown input '" + name->get<std::string>() + "' (the model takes 'x')");
  }
  const auto datatype = in.find("datatype");
  if (datatype == in.end() || !datatype->is_string()) {
    return fail(400, "input 'x': 'datatype' must be a string");
  }
  if (datatype->get<std::string>() != "FP32") {
    return fail(400, "input 'x': datatype " + datatype->get<std::string>() +
                         " is not supported (FP32 only)");
  }
  const auto shape = in.find("shape");
  if (shape == in.end() || !shape->is_array() || shape->size() < 2 || shape->size() > 3) {
    return fail(400, "input 'x': shape must be [seq_len, d_in] or [batch, seq_len, d_in]");
  }
  std::int64_t dims[3] = {1, 0, 0};
  const std::size_t rank = shape->size();
  for (std::size_t i = 0; i < rank; ++i) {
    const json& d = (*shape)[i];
    if (!d.is_number_integer() || d.get<std::int64_t>() < 1 || d.get<std::int64_t>() > (1 << 30)) {
      return fail(400, "input 'x': shape dimension " + std::to_string(i) +
                           " must be an integer from 1 to 2^30");
    }
    dims[3 - rank + i] = d.get<std::int64_t>();
  }
  r.rank = static_cast<int>(rank);
  r.batch = dims[0];
  r.seq_len = dims[1];
  const std::string shape_text =
      rank == 3 ? "[" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + ", " +
                      std::to_string(dims[2]) + "]"
                : "[" + std::to_string(dims[1]) + ", " + std::to_string(dims[2]) + "]";
  if (dims[2] != model.d_in) {
    return fail(400, "input 'x': shape " + shape_text + " does not end in d_in " +
                         std::to_string(model.d_in));
  }
  if (r.seq_len > model.context_length) {
    return fail(400, "input 'x': seq_len " + std::to_string(r.seq_len) +
                         " exceeds context_length " + std::to_string(model.context_length));
  }
  // Bounded by max_request_bytes: every value needs at least 1 byte of JSON or 4 of binary.
  const std::int64_t count = r.batch * r.seq_len * model.d_in;  // <= 2^60: no overflow
  if (static_cast<std::uint64_t>(count) > max_request_bytes) {
    return fail(413, "input 'x': shape " + shape_text + " cannot fit in --max-request-bytes " +
                         std::to_string(max_request_bytes));
  }
  std::optional<std::size_t> binary_size;
  if (const auto p = in.find("parameters"); p != in.end()) {
    if (!p->is_object()) return fail(400, "input 'x': 'parameters' must be an object");
    if (const auto b = p->find("binary_data_size"); b != p->end()) {
      if (!b->is_number_unsigned()) {
        return fail(400, "input 'x': binary_data_size must be a non-negative integer");
      }
      binary_size = b->get<std::uint64_t>();
    }
  }
  const auto data = in.find("data");
  if (binary_size) {
    if (!header_length) {
      return fail(400,
                  "input 'x' has binary_data_size but the request has no "
                  "Inference-Header-Content-Length header");
    }
    if (data != in.end()) return fail(400, "input 'x' has both 'data' and binary_data_size");
    const std::uint64_t want = static_cast<std::uint64_t>(count) * sizeof(float);
    if (*binary_size != want) {
      return fail(400, "input 'x': binary_data_size " + std::to_string(*binary_size) +
                           " but shape " + shape_text + " of FP32 needs " + std::to_string(want) +
                           " bytes");
    }
    if (binary.size() < want) {
      return fail(400, "input 'x': the body holds " + std::to_string(binary.size()) +
                           " bytes of binary data, binary_data_size says " + std::to_string(want));
    }
    r.x.resize(static_cast<std::size_t>(count));
    std::memcpy(r.x.data(), binary.data(), want);  // little-endian on every target of attn
    binary_used = want;
  } else {
    if (data == in.end() || !data->is_array()) {
      return fail(400, "input 'x': 'data' must be an array (or use binary_data_size)");
    }
    r.x.reserve(static_cast<std::size_t>(count));
    if (!flatten_numbers(*data, r.x, static_cast<std::size_t>(count), 0)) {
      return fail(400, "input 'x': 'data' must hold only numbers, at most " +
                           std::to_string(count) + " of them");
    }
    if (r.x.size() != static_cast<std::size_t>(count)) {
      return fail(400, "input 'x': shape " + shape_text + " needs " + std::to_string(count) +
                           " values, 'data' has " + std::to_string(r.x.size()));
    }
  }
  if (binary_used != binary.size()) {
    return fail(400, "the body has " + std::to_string(binary.size() - binary_used) +
                         " bytes after the tensors it declares");
  }

  // Outputs: optional; only "y"; binary_data per output.
  if (const auto outs = doc.find("outputs"); outs != doc.end()) {
    if (!outs->is_array()) return fail(400, "'outputs' must be an array");
    for (const json& o : *outs) {
      if (!o.is_object()) return fail(400, "each output must be an object");
      const auto n = o.find("name");
      if (n == o.end() || !n->is_string()) return fail(400, "outputs[].name must be a string");
      if (n->get<std::string>() != "y") {
        return fail(400, "unknown output '" + n->get<std::string>() + "' (the model gives 'y')");
      }
      if (const auto p = o.find("parameters"); p != o.end()) {
        if (!p->is_object()) return fail(400, "output 'y': 'parameters' must be an object");
        std::string error;
        bool binary_data = false;
        if (!read_bool(*p, "binary_data", binary_data, error)) return fail(400, error);
        if (binary_data) r.binary_output = true;
      }
    }
  }
  if (r.sequence && r.batch != 1) {
    return fail(400, "a sequence request takes one sequence: shape " + shape_text + " has batch " +
                         std::to_string(r.batch));
  }
  return out;
}

void append_shape(std::string& out, const InferRequest& r, std::int64_t d_out) {
  out += '[';
  if (r.rank == 3) out += std::to_string(r.batch) + ",";
  out += std::to_string(r.seq_len) + "," + std::to_string(d_out) + "]";
}

}  // namespace

Decoded decode_infer_request(std::string_view body, std::optional<std::string_view> header_length,
                             const ModelShape& model, std::size_t max_request_bytes) noexcept {
  try {
    return decode(body, header_length, model, max_request_bytes);
  } catch (const std::bad_alloc&) {
    return fail(413, "request too large for the server's memory");
  } catch (const std::exception& e) {  // a nlohmann type error missed above: still a 400
    return fail(400, std::string("malformed request: ") + e.what());
  }
}

void append_float(std::string& out, float v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? end : buf);
}

EncodedResponse encode_infer_response(const InferRequest& r, std::string_view model_name,
                                      std::span<const float> y, std::int64_t d_out) {
  json head = json::object();
  head["model_name"] = model_name;
  head["model_version"] = "1";
  if (!r.id.empty()) head["id"] = r.id;
  if (r.sequence) {
    json params = json::object();
    if (r.sequence->is_string) {
      params["sequence_id"] = r.sequence->text;
    } else {
      params["sequence_id"] = r.sequence->number;
    }
    params["sequence_start"] = r.sequence_start;
    params["sequence_end"] = r.sequence_end;
    head["parameters"] = params;
  }
  // The output object is written by hand: its data array is the bulk of the body.
  std::string text = head.dump(-1, ' ', false, json::error_handler_t::replace);
  text.pop_back();  // the closing brace
  text += ",\"outputs\":[{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":";
  append_shape(text, r, d_out);
  EncodedResponse res;
  if (r.binary_output) {
    const std::size_t bytes = y.size() * sizeof(float);
    text += ",\"parameters\":{\"binary_data_size\":" + std::to_string(bytes) + "}}]}";
    res.header_length = text.size();
    text.append(reinterpret_cast<const char*>(y.data()), bytes);
    res.content_type = "application/octet-stream";
  } else {
    text += ",\"data\":[";
    text.reserve(text.size() + y.size() * 12 + 8);
    for (std::size_t i = 0; i < y.size(); ++i) {
      if (i) text += ',';
      append_float(text, y[i]);
    }
    text += "]}]}";
    res.content_type = "application/json";
  }
  res.body = std::move(text);
  return res;
}

std::string error_json(std::string_view message) {
  // Invalid UTF-8 from a client (echoed in a message) is replaced, never thrown.
  return json{{"error", std::string(message)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace attn::serve
