// Layers from in-memory named tensors: encoded as a safetensors image and read by load_layer,
// so state dicts and files share one layout detection and one mapping.
#include "attn/state_dict.hpp"

#include <cstddef>
#include <vector>

#include "io/file_bytes.hpp"

namespace attn::io {

Result<Layer> load_layer_from_tensors(std::span<const NamedTensor> tensors,
                                      const LayerOptions& options, const std::string& name) {
  return detail::guard(name, [&]() -> Result<Layer> {
    // One extra copy at load time buys the file path's checks (names, shapes, masks) unchanged.
    Result<std::vector<std::byte>> bytes = encode_safetensors(tensors);
    if (!bytes.ok())
      return detail::file_error(bytes.status().code(), name, bytes.status().message());
    Result<SafetensorsFile> file = SafetensorsFile::from_bytes(bytes.value(), name);
    if (!file.ok()) return file.status();
    return load_layer(file.value(), options);
  });
}

}  // namespace attn::io
