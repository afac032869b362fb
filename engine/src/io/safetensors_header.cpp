// Validates a safetensors header field by field with nlohmann-json: a SAX pass for syntax,
// duplicate keys and depth, then a DOM pass for the tensor entries and their offsets.
#include "io/safetensors_header.hpp"

#include <algorithm>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/dtype.hpp"
#include "io/file_bytes.hpp"

namespace attn::io::detail {
namespace {

using nlohmann::json;

// A header nests at most object -> tensor entry -> shape array; anything deeper is not a
// safetensors header, and the bound keeps the DOM pass from building pathological trees.
constexpr std::size_t kMaxDepth = 8;
// Long parser messages quote the input; keep error messages readable.
constexpr std::size_t kMaxQuoted = 160;

std::string quote_name(std::string_view s) {
  std::string out = "'";
  out += s.size() > kMaxQuoted ? std::string(s.substr(0, kMaxQuoted)) + "..." : std::string(s);
  return out + "'";
}

// The first SAX pass: reports syntax errors, duplicate keys at any level and excessive depth.
class SyntaxCheck final : public nlohmann::json_sax<json> {
 public:
  std::string error;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(true); }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    Level& top = stack_.back();
    if (!top.keys.insert(k).second) {
      if (stack_.size() == 1) {
        error = "duplicate tensor name " + quote_name(k);
      } else {
        error = "duplicate key " + quote_name(k) + " in " + quote_name(stack_[1].name);
      }
      return false;
    }
    top.last_key = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    std::string what = ex.what();
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    error = "header is not valid JSON: " +
            (what.size() > 2 * kMaxQuoted ? what.substr(0, 2 * kMaxQuoted) + "..." : what);
    return false;
  }

 private:
  struct Level {
    bool object = false;
    std::string name;  // the key this container is stored under
    std::set<std::string> keys;
    std::string last_key;
  };

  bool open(bool object) {
    if (stack_.size() >= kMaxDepth) {
      error = "header nests deeper than " + std::to_string(kMaxDepth) + " levels";
      return false;
    }
    std::string name = stack_.empty()         ? ""
                       : stack_.back().object ? stack_.back().last_key
                                              : stack_.back().name;
    stack_.push_back({object, std::move(name), {}, {}});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  std::vector<Level> stack_;
};

const char* json_type(const json& j) { return j.is_discarded() ? "nothing" : j.type_name(); }

Status corrupt(std::string_view file, const std::string& message) {
  return file_error(ErrorCode::kCorruptData, file, message);
}

Status tensor_corrupt(std::string_view file, const std::string& tensor,
                      const std::string& message) {
  return corrupt(file, "tensor " + quote_name(tensor) + ": " + message);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Reads a JSON value that must be a non-negative integer no larger than `max`.
bool as_uint(const json& j, std::uint64_t max, std::uint64_t& out) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<std::int64_t>() >= 0))
    return false;
  out = j.get<std::uint64_t>();
  return out <= max;
}

std::string known_dtypes() {
  std::string names;
  for (DType d : {DType::kBool, DType::kU8, DType::kI8, DType::kU16, DType::kI16, DType::kU32,
                  DType::kI32, DType::kU64, DType::kI64, DType::kF16, DType::kBF16, DType::kF32,
                  DType::kF64, DType::kF8E4M3, DType::kF8E5M2}) {
    names += (names.empty() ? "" : ", ") + std::string(to_string(d));
  }
  return names;
}

Status parse_metadata(const json& j, std::string_view file,
                      std::map<std::string, std::string>& out) {
  if (!j.is_object()) {
    return corrupt(file, std::string("__metadata__ is a JSON ") + json_type(j) +
                             "; it must be an object of strings");
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return corrupt(file, "__metadata__[" + quote_name(key) + "] is a JSON " + json_type(value) +
                               "; safetensors metadata values are strings");
    }
    out.emplace(key, value.get<std::string>());
  }
  return {};
}

Status parse_tensor(const std::string& name, const json& j, std::uint64_t data_bytes,
                    std::string_view file, TensorInfo& t) {
  t.name = name;
  if (!j.is_object())
    return tensor_corrupt(file, name,
                          std::string("entry is a JSON ") + json_type(j) + ", not an object");
  for (const auto& [key, value] : j.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return tensor_corrupt(
          file, name,
          "unexpected key " + quote_name(key) + " (expected dtype, shape, data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!j.contains(key))
      return tensor_corrupt(file, name, std::string("missing key '") + key + "'");
  }
  const json& dtype = j["dtype"];
  if (!dtype.is_string())
    return tensor_corrupt(file, name,
                          std::string("dtype is a JSON ") + json_type(dtype) + ", not a string");
  const std::optional<DType> d = parse_dtype(dtype.get<std::string>());
  if (!d)
    return tensor_corrupt(file, name,
                          "unknown dtype " + quote_name(dtype.get<std::string>()) +
                              " (known: " + known_dtypes() + ")");
  t.dtype = *d;

  const json& shape = j["shape"];
  if (!shape.is_array())
    return tensor_corrupt(file, name,
                          std::string("shape is a JSON ") + json_type(shape) + ", not an array");
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const json& dim : shape) {
    std::uint64_t v = 0;
    if (!as_uint(dim, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), v)) {
      return tensor_corrupt(file, name,
                            "shape " + quote_name(shape.dump()) +
                                " has a dimension that is not an integer in [0, 2^63)");
    }
    t.shape.push_back(static_cast<std::int64_t>(v));
    overflow = overflow || __builtin_mul_overflow(numel, v, &numel);
  }
  std::uint64_t bytes = 0;
  if (overflow || __builtin_mul_overflow(numel, dtype_size(t.dtype), &bytes)) {
    return tensor_corrupt(file, name,
                          "shape " + shape_text(t.shape) + " of " + to_string(t.dtype) +
                              " has a byte size that overflows 64 bits");
  }

  const json& offsets = j["data_offsets"];
  std::uint64_t begin = 0, end = 0;
  if (!offsets.is_array() || offsets.size() != 2 || !as_uint(offsets[0], UINT64_MAX, begin) ||
      !as_uint(offsets[1], UINT64_MAX, end)) {
    return tensor_corrupt(file, name,
                          "data_offsets " + quote_name(offsets.dump()) +
                              " is not [begin, end] of non-negative integers");
  }
  const std::string span =
      "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (end < begin) return tensor_corrupt(file, name, span + " end before they begin");
  if (end > data_bytes) {
    return tensor_corrupt(file, name,
                          span + " run past the data area (" + std::to_string(data_bytes) +
                              " bytes): the file is truncated or the offsets are wrong");
  }
  if (end - begin != bytes) {
    return tensor_corrupt(file, name,
                          span + " hold " + std::to_string(end - begin) + " bytes but shape " +
                              shape_text(t.shape) + " of " + to_string(t.dtype) + " needs " +
                              std::to_string(bytes));
  }
  t.offset_bytes = begin;
  t.size_bytes = bytes;
  return {};
}

// The data area must be exactly the tensors, back to back, as the reference implementation
// requires: sorted by offset, each begins where the previous ends, the last ends the file.
Status check_tiling(std::vector<TensorInfo>& tensors, std::uint64_t data_bytes,
                    std::string_view file) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.offset_bytes != b.offset_bytes ? a.offset_bytes < b.offset_bytes
                                            : a.size_bytes < b.size_bytes;
  });
  std::uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.offset_bytes < expected) {
      return tensor_corrupt(file, t.name,
                            "data_offsets [" + std::to_string(t.offset_bytes) + ", " +
                                std::to_string(t.offset_bytes + t.size_bytes) +
                                "] overlap tensor " + quote_name(previous->name) +
                                " which ends at " + std::to_string(expected));
    }
    if (t.offset_bytes > expected) {
      return tensor_corrupt(file, t.name,
                            "data_offsets begin at " + std::to_string(t.offset_bytes) +
                                ", leaving a gap of " + std::to_string(t.offset_bytes - expected) +
                                " bytes after " +
                                (previous ? "tensor " + quote_name(previous->name) : "the header"));
    }
    expected = t.offset_bytes + t.size_bytes;
    previous = &t;
  }
  if (expected != data_bytes) {
    return corrupt(file, "the data area holds " + std::to_string(data_bytes) +
                             " bytes but the tensors cover " + std::to_string(expected) + " (" +
                             std::to_string(data_bytes - expected) + " trailing bytes)");
  }
  return {};
}

}  // namespace

Result<SafetensorsHeader> parse_safetensors_header(std::string_view text, std::uint64_t data_bytes,
                                                   std::string_view file) {
  SyntaxCheck check;
  const bool ok =
      json::sax_parse(text.begin(), text.end(), &check, nlohmann::detail::input_format_t::json,
                      /*strict=*/true);
  if (!ok) return corrupt(file, check.error.empty() ? "header is not valid JSON" : check.error);
  const json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!root.is_object()) {
    return corrupt(file,
                   std::string("header is a JSON ") + json_type(root) + "; it must be an object");
  }
  SafetensorsHeader header;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (Status s = parse_metadata(value, file, header.metadata); !s.ok()) return s;
      continue;
    }
    TensorInfo t;
    if (Status s = parse_tensor(name, value, data_bytes, file, t); !s.ok()) return s;
    header.tensors.push_back(std::move(t));
  }
  if (Status s = check_tiling(header.tensors, data_bytes, file); !s.ok()) return s;
  return header;
}

}  // namespace attn::io::detail
