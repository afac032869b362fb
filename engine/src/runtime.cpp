// Instruction-set resolution and the build/machine description.
#include "attn/runtime.hpp"

#include <cstdlib>
#include <fstream>
#include <string>

#include "kernels/isa.hpp"
#include "scheduler.hpp"

namespace attn {
namespace detail {
const char* build_commit() noexcept;   // generated: build_info.cpp
const char* build_version() noexcept;  // generated: build_info.cpp
}  // namespace detail

namespace {

Isa from_kernel_isa(kernels::Isa isa) {
  switch (isa) {
    case kernels::Isa::kAvx512:
      return Isa::kAvx512;
    case kernels::Isa::kAvx2:
      return Isa::kAvx2;
    case kernels::Isa::kSse2:
      return Isa::kSse2;
  }
  return Isa::kSse2;
}

std::string supported_list() {
  std::string s;
  for (int i = kernels::kIsaCount - 1; i >= 0; --i) {
    const auto k = static_cast<kernels::Isa>(i);
    if (!kernels::isa_supported(k)) continue;
    s += s.empty() ? "" : ", ";
    s += kernels::isa_name(k);
  }
  return s;
}

}  // namespace

Result<Isa> resolve_isa(Isa requested) {
  Isa isa = requested;
  if (isa == Isa::kAuto) {
    const char* env = std::getenv("ATTN_ISA");
    if (env != nullptr && *env != '\0') {
      Result<Isa> parsed = parse_isa(env);
      if (!parsed.ok()) return Status(ErrorCode::kInvalidArgument, "ATTN_ISA: " + parsed.status().message());
      isa = *parsed;
    }
  }
  if (isa == Isa::kAuto) return from_kernel_isa(kernels::best_isa());
  const auto k = static_cast<kernels::Isa>(static_cast<int>(isa) - 1);
  if (!kernels::isa_supported(k)) {
    return Status(ErrorCode::kUnsupported, std::string("instruction set ") + to_string(isa) +
                                               " is not available on this CPU or in this build (available: " +
                                               supported_list() + ")");
  }
  return isa;
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.version = detail::build_version();
  info.git_commit = detail::build_commit();
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) info.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  Result<Isa> isa = resolve_isa(Isa::kAuto);
  info.default_isa = isa.ok() ? to_string(*isa) : isa.status().message();
  for (int i = kernels::kIsaCount - 1; i >= 0; --i) {
    const auto k = static_cast<kernels::Isa>(i);
    if (kernels::isa_supported(k)) info.isas.emplace_back(kernels::isa_name(k));
  }
  info.cpus = detail::available_cpus();
  return info;
}

}  // namespace attn
