// .npy (NumPy's array file, versions 1.0-3.0): little-endian float32 in C order, in and out.
// The header is a Python dict literal; a small strict parser reads exactly the three keys
// NumPy writes (descr, fortran_order, shape) and rejects anything else.
#include <cctype>
#include <cstring>
#include <optional>

#include "attn/npy.hpp"
#include "io/file_bytes.hpp"

namespace attn::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicBytes = 6;
constexpr std::size_t kAlign = 64;  // NumPy pads the header so the data starts 64-byte aligned

// The header's dict, as parsed.
struct NpyHeader {
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<std::int64_t>> shape;
};

// A cursor over the header text; every method fails (returns false) rather than read past it.
class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  bool peek(char c) {
    skip_space();
    return i_ < s_.size() && s_[i_] == c;
  }
  bool at_end() {
    skip_space();
    return i_ == s_.size();
  }
  // A Python string literal in ' or " without escapes (NumPy never writes any).
  bool string(std::string& out) {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) return false;
    const char quote = s_[i_++];
    const std::size_t end = s_.find(quote, i_);
    if (end == std::string_view::npos) return false;
    out.assign(s_.substr(i_, end - i_));
    if (out.find('\\') != std::string::npos) return false;
    i_ = end + 1;
    return true;
  }
  bool word(std::string_view w) {
    skip_space();
    if (s_.substr(i_, w.size()) != w) return false;
    const std::size_t next = i_ + w.size();
    if (next < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[next])) || s_[next] == '_'))
      return false;
    i_ = next;
    return true;
  }
  // A non-negative decimal integer below 2^63 (Python 2's "3L" suffix accepted).
  bool integer(std::int64_t& out) {
    skip_space();
    std::size_t j = i_;
    std::int64_t v = 0;
    while (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) {
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s_[j] - '0', &v))
        return false;
      ++j;
    }
    if (j == i_) return false;
    if (j < s_.size() && s_[j] == 'L') ++j;
    i_ = j;
    out = v;
    return true;
  }
  std::size_t position() const { return i_; }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

// Parses "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"; returns "" or the error.
std::string parse_header(std::string_view text, NpyHeader& h) {
  Lexer lex(text);
  auto at = [&](const std::string& what) {
    return what + " at byte " + std::to_string(lex.position()) + " of the header";
  };
  if (!lex.eat('{')) return at("expected '{'");
  while (!lex.eat('}')) {
    std::string key;
    if (!lex.string(key)) return at("expected a quoted key");
    if (!lex.eat(':')) return at("expected ':' after '" + key + "'");
    if (key == "descr") {
      std::string d;
      if (!lex.string(d))
        return at("'descr' is not a string (structured dtypes are not supported)");
      if (h.descr) return "duplicate key 'descr'";
      h.descr = d;
    } else if (key == "fortran_order") {
      bool v;
      if (lex.word("True")) {
        v = true;
      } else if (lex.word("False")) {
        v = false;
      } else {
        return at("'fortran_order' is not True or False");
      }
      if (h.fortran_order) return "duplicate key 'fortran_order'";
      h.fortran_order = v;
    } else if (key == "shape") {
      if (!lex.eat('(')) return at("'shape' is not a tuple");
      std::vector<std::int64_t> dims;
      while (!lex.eat(')')) {
        std::int64_t d;
        if (!lex.integer(d))
          return at("'shape' holds something other than a non-negative integer below 2^63");
        dims.push_back(d);
        if (!lex.eat(',') && !lex.peek(')')) return at("expected ',' or ')' in 'shape'");
      }
      if (h.shape) return "duplicate key 'shape'";
      h.shape = std::move(dims);
    } else {
      return "unexpected key '" + key + "' (a .npy header has descr, fortran_order and shape)";
    }
    if (!lex.eat(',') && !lex.peek('}')) return at("expected ',' or '}'");
  }
  if (!lex.at_end()) return at("unexpected text after the dict");
  if (!h.descr) return "the header has no 'descr'";
  if (!h.fortran_order) return "the header has no 'fortran_order'";
  if (!h.shape) return "the header has no 'shape'";
  return "";
}

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

Result<Tensor> parse(std::span<const std::byte> bytes, std::string_view name) {
  auto corrupt = [&](const std::string& m) {
    return detail::file_error(ErrorCode::kCorruptData, name, m);
  };
  auto unsupported = [&](const std::string& m) {
    return detail::file_error(ErrorCode::kUnsupported, name, m);
  };
  if (bytes.size() < kMagicBytes + 2 || std::memcmp(bytes.data(), kMagic, kMagicBytes) != 0) {
    return corrupt(bytes.empty()
                       ? "file is empty; not a .npy file"
                       : "not a .npy file (it does not start with \\x93NUMPY and a version)");
  }
  const auto major = static_cast<unsigned>(bytes[6]), minor = static_cast<unsigned>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return unsupported(".npy version " + std::to_string(major) + "." + std::to_string(minor) +
                       " (supported: 1.0, 2.0, 3.0)");
  }
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  const std::size_t prefix = kMagicBytes + 2 + len_bytes;
  if (bytes.size() < prefix) return corrupt("file is truncated inside the header length");
  const std::uint64_t header_len = major == 1 ? detail::load_le<std::uint16_t>(bytes.data() + 8)
                                              : detail::load_le<std::uint32_t>(bytes.data() + 8);
  if (header_len > bytes.size() - prefix) {
    return corrupt("header length " + std::to_string(header_len) +
                   " runs past the end of the file (" + std::to_string(bytes.size() - prefix) +
                   " bytes follow it)");
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + prefix), header_len);
  NpyHeader h;
  if (std::string err = parse_header(text, h); !err.empty()) return corrupt("bad header: " + err);
  if (*h.descr != "<f4") {
    return unsupported("dtype '" + *h.descr +
                       "' is not supported; save little-endian float32 ('<f4'), " +
                       "e.g. x.astype('<f4') in NumPy or x.float() in PyTorch");
  }
  const std::vector<std::int64_t>& dims = *h.shape;
  if (*h.fortran_order && dims.size() > 1) {
    return unsupported("Fortran (column-major) order is not supported; save a C-contiguous array");
  }
  if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
    return unsupported("shape " + dims_text(dims) + " has rank " + std::to_string(dims.size()) +
                       ", more than " + std::to_string(kMaxRank));
  }
  const Shape shape(std::span<const std::int64_t>(dims.data(), dims.size()));
  const std::int64_t numel = shape.numel();
  std::uint64_t need = 0;
  if (numel < 0 ||
      __builtin_mul_overflow(static_cast<std::uint64_t>(numel), std::uint64_t{4}, &need)) {
    return corrupt("shape " + dims_text(dims) + " has more elements than fit in 64 bits");
  }
  const std::uint64_t have = bytes.size() - prefix - header_len;
  if (have != need) {
    return corrupt("shape " + dims_text(dims) + " of float32 needs " + std::to_string(need) +
                   " data bytes but " + std::to_string(have) +
                   (have < need ? " are present (truncated)" : " are present (trailing bytes)"));
  }
  std::vector<float> values(static_cast<std::size_t>(numel));
  if (numel > 0) std::memcpy(values.data(), bytes.data() + prefix + header_len, need);
  return Tensor(shape, std::move(values));
}

}  // namespace

Result<Tensor> parse_npy(std::span<const std::byte> bytes, std::string_view name) {
  return detail::guard(name, [&] { return parse(bytes, name); });
}

Result<Tensor> read_npy(const std::string& path) {
  return detail::guard(path, [&]() -> Result<Tensor> {
    Result<std::unique_ptr<detail::FileBytes>> file = detail::FileBytes::map(path);
    if (!file.ok()) return file.status();
    return parse((*file)->bytes(), path);
  });
}

Result<std::vector<std::byte>> encode_npy(ConstTensorView tensor) {
  return detail::guard("npy writer", [&]() -> Result<std::vector<std::byte>> {
    const std::int64_t n = tensor.shape.numel();
    if (n < 0) {
      return Status(ErrorCode::kInvalidArgument,
                    "npy writer: invalid shape " + tensor.shape.to_string());
    }
    if (n > 0 && tensor.data == nullptr)
      return Status(ErrorCode::kInvalidArgument, "npy writer: no data");
    std::vector<std::int64_t> dims;
    for (int i = 0; i < tensor.shape.rank(); ++i) dims.push_back(tensor.shape[i]);
    std::string header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + dims_text(dims) + ", }";
    const std::size_t prefix = kMagicBytes + 2 + 2;  // version 1.0: a 2-byte header length
    header.append((kAlign - (prefix + header.size() + 1) % kAlign) % kAlign, ' ');
    header += '\n';
    std::vector<std::byte> out(prefix + header.size() + static_cast<std::size_t>(n) * 4);
    std::memcpy(out.data(), kMagic, kMagicBytes);
    out[6] = std::byte{1};
    out[7] = std::byte{0};
    const auto len = static_cast<std::uint16_t>(header.size());
    std::memcpy(out.data() + 8, &len, 2);
    std::memcpy(out.data() + prefix, header.data(), header.size());
    if (n > 0)
      std::memcpy(out.data() + prefix + header.size(), tensor.data,
                  static_cast<std::size_t>(n) * 4);
    return out;
  });
}

Status write_npy(const std::string& path, ConstTensorView tensor) {
  return detail::guard(path, [&]() -> Status {
    Result<std::vector<std::byte>> bytes = encode_npy(tensor);
    if (!bytes.ok()) return Status(bytes.status().code(), path + ": " + bytes.status().message());
    return detail::write_file(path, bytes.value());
  });
}

}  // namespace attn::io
