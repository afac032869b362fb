// safetensors: a memory-mapped, fully validated reader and a writer (F32, F16, BF16).
#include <algorithm>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "attn/safetensors.hpp"
#include "io/dtype.hpp"
#include "io/file_bytes.hpp"
#include "io/safetensors_header.hpp"

namespace attn::io {

struct detail::SafetensorsData {
  std::string name;
  std::unique_ptr<detail::FileBytes> file;
  std::span<const std::byte> data;  // the data area, after the header
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::size_t, std::less<>> index;
  std::map<std::string, std::string> metadata;
};

namespace {

constexpr std::size_t kLengthBytes = 8;  // the little-endian u64 header length

Result<std::shared_ptr<detail::SafetensorsData>> build(std::unique_ptr<detail::FileBytes> file,
                                                       std::string name) {
  const std::span<const std::byte> bytes = file->bytes();
  auto corrupt = [&](const std::string& message) {
    return detail::file_error(ErrorCode::kCorruptData, name, message);
  };
  if (bytes.empty()) {
    return corrupt("file is empty; a safetensors file starts with an 8-byte header length");
  }
  if (bytes.size() < kLengthBytes) {
    return corrupt("file is truncated: " + std::to_string(bytes.size()) +
                   " bytes, shorter than the 8-byte header length");
  }
  const auto header_bytes = detail::load_le<std::uint64_t>(bytes.data());
  const std::uint64_t after_length = bytes.size() - kLengthBytes;
  if (header_bytes > after_length) {
    return corrupt("header length " + std::to_string(header_bytes) +
                   " runs past the end of the file (" + std::to_string(after_length) +
                   " bytes follow the length): truncated or not safetensors");
  }
  if (header_bytes > detail::kMaxHeaderBytes) {
    return corrupt("header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                   std::to_string(detail::kMaxHeaderBytes) + " bytes");
  }
  if (header_bytes == 0) return corrupt("header length is 0; the header must be a JSON object");
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + kLengthBytes),
                              header_bytes);
  const std::uint64_t data_bytes = after_length - header_bytes;
  Result<detail::SafetensorsHeader> header =
      detail::parse_safetensors_header(text, data_bytes, name);
  if (!header.ok()) return header.status();

  auto impl = std::make_shared<detail::SafetensorsData>();
  impl->name = std::move(name);
  impl->data = bytes.subspan(kLengthBytes + header_bytes);
  impl->tensors = std::move(header->tensors);
  impl->metadata = std::move(header->metadata);
  for (std::size_t i = 0; i < impl->tensors.size(); ++i)
    impl->index.emplace(impl->tensors[i].name, i);
  impl->file = std::move(file);
  return impl;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

SafetensorsFile::SafetensorsFile(std::shared_ptr<const detail::SafetensorsData> data)
    : impl_(std::move(data)) {}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  return detail::guard(path, [&]() -> Result<SafetensorsFile> {
    Result<std::unique_ptr<detail::FileBytes>> file = detail::FileBytes::map(path);
    if (!file.ok()) return file.status();
    Result<std::shared_ptr<detail::SafetensorsData>> impl = build(std::move(file.value()), path);
    if (!impl.ok()) return impl.status();
    return SafetensorsFile(std::move(impl.value()));
  });
}

Result<SafetensorsFile> SafetensorsFile::from_bytes(std::span<const std::byte> bytes,
                                                    std::string name) {
  return detail::guard(name, [&]() -> Result<SafetensorsFile> {
    Result<std::shared_ptr<detail::SafetensorsData>> impl =
        build(detail::FileBytes::copy(bytes), name);
    if (!impl.ok()) return impl.status();
    return SafetensorsFile(std::move(impl.value()));
  });
}

const std::string& SafetensorsFile::name() const noexcept { return impl_->name; }
const std::vector<TensorInfo>& SafetensorsFile::tensors() const noexcept { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const noexcept {
  return impl_->metadata;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const noexcept {
  auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

std::span<const std::byte> SafetensorsFile::raw(const TensorInfo& info) const noexcept {
  return impl_->data.subspan(info.offset_bytes, info.size_bytes);
}

Result<Tensor> SafetensorsFile::read(std::string_view name) const {
  return detail::guard(impl_->name, [&]() -> Result<Tensor> {
    const TensorInfo* info = find(name);
    if (info == nullptr) {
      return detail::file_error(ErrorCode::kInvalidArgument, impl_->name,
                                "no tensor named '" + std::string(name) + "'");
    }
    auto fail = [&](ErrorCode code, const std::string& why) {
      return detail::file_error(code, impl_->name, "tensor '" + info->name + "': " + why);
    };
    if (!detail::convertible_to_f32(info->dtype)) {
      return fail(ErrorCode::kUnsupported,
                  std::string("dtype ") + to_string(info->dtype) + " cannot be read as float32");
    }
    if (info->shape.size() > static_cast<std::size_t>(kMaxRank)) {
      return fail(ErrorCode::kUnsupported, "rank " + std::to_string(info->shape.size()) +
                                               " of shape " + shape_text(info->shape) +
                                               " exceeds " + std::to_string(kMaxRank));
    }
    const Shape shape(std::span<const std::int64_t>(info->shape.data(), info->shape.size()));
    const std::size_t n = info->size_bytes / dtype_size(info->dtype);
    std::vector<float> values(n);
    detail::to_f32(info->dtype, raw(*info).data(), n, values.data());
    return Tensor(shape, std::move(values));
  });
}

// ---- writer --------------------------------------------------------------------------

Result<std::vector<std::byte>> encode_safetensors(
    std::span<const NamedTensor> tensors, const std::map<std::string, std::string>& metadata,
    DType dtype) {
  return detail::guard("safetensors writer", [&]() -> Result<std::vector<std::byte>> {
    auto invalid = [](const std::string& message) {
      return Status(ErrorCode::kInvalidArgument, "safetensors writer: " + message);
    };
    if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
      return Status(ErrorCode::kUnsupported, std::string("safetensors writer: dtype ") +
                                                 to_string(dtype) + " (write F32, F16 or BF16)");
    }
    const std::size_t elem = dtype_size(dtype);
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::set<std::string_view> names;
    std::uint64_t offset = 0;
    for (const NamedTensor& t : tensors) {
      if (t.name.empty() || t.name == "__metadata__")
        return invalid("tensor name '" + t.name + "' is not allowed");
      if (!names.insert(t.name).second) return invalid("duplicate tensor name '" + t.name + "'");
      const std::int64_t n = t.tensor.shape.numel();
      if (n < 0)
        return invalid("tensor '" + t.name + "' has invalid shape " + t.tensor.shape.to_string());
      if (n > 0 && t.tensor.data == nullptr) return invalid("tensor '" + t.name + "' has no data");
      std::vector<std::int64_t> dims;
      for (int i = 0; i < t.tensor.shape.rank(); ++i) dims.push_back(t.tensor.shape[i]);
      const std::uint64_t bytes = static_cast<std::uint64_t>(n) * elem;
      header[t.name] = {
          {"dtype", to_string(dtype)}, {"shape", dims}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    std::string text;
    try {
      text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
    } catch (const nlohmann::json::type_error&) {
      return invalid("a tensor name or metadata string is not valid UTF-8");
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // align the data area to 8 bytes

    std::vector<std::byte> out(8 + text.size() + offset);
    const std::uint64_t header_bytes = text.size();
    std::memcpy(out.data(), &header_bytes, 8);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::byte* dst = out.data() + 8 + text.size();
    for (const NamedTensor& t : tensors) {
      const auto n = static_cast<std::size_t>(t.tensor.shape.numel());
      if (dtype == DType::kF32) {
        if (n > 0) std::memcpy(dst, t.tensor.data, n * sizeof(float));
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          const std::uint16_t h = dtype == DType::kF16 ? detail::f32_to_f16(t.tensor.data[i])
                                                       : detail::f32_to_bf16(t.tensor.data[i]);
          std::memcpy(dst + 2 * i, &h, 2);
        }
      }
      dst += n * elem;
    }
    return out;
  });
}

Status write_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                         const std::map<std::string, std::string>& metadata, DType dtype) {
  return detail::guard(path, [&]() -> Status {
    Result<std::vector<std::byte>> bytes = encode_safetensors(tensors, metadata, dtype);
    if (!bytes.ok()) return Status(bytes.status().code(), path + ": " + bytes.status().message());
    return detail::write_file(path, bytes.value());
  });
}

}  // namespace attn::io
