// The kernel suite's context, without libattn (one copy of the kernels per process): the
// version and commit from the generated build_info.cpp, the ISAs from the kernel library.
#include <benchmark/benchmark.h>

#include <fstream>
#include <string>

#include "bench_common.hpp"
#include "context.hpp"
#include "kernels/isa.hpp"

namespace attn::detail {
const char* build_commit() noexcept;   // generated: build_info.cpp
const char* build_version() noexcept;  // generated: build_info.cpp
}  // namespace attn::detail

namespace bench {

namespace {

// The "model name" line of /proc/cpuinfo, or "".
std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    const auto colon = line.find(':');
    if (line.rfind("model name", 0) == 0 && colon != std::string::npos) {
      const auto start = line.find_first_not_of(' ', colon + 1);
      return start == std::string::npos ? "" : line.substr(start);
    }
  }
  return "";
}

}  // namespace

void add_context() {
  namespace k = attn::kernels;
  benchmark::AddCustomContext("attn_version", attn::detail::build_version());
  benchmark::AddCustomContext("attn_commit", attn::detail::build_commit());
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("isa", k::isa_name(kernel_isa()));
  std::string isas;
  for (k::Isa isa : k::kAllIsas) {  // best first, as runtime_info() lists them
    if (!k::isa_supported(isa)) continue;
    if (!isas.empty()) isas += ',';
    isas += k::isa_name(isa);
  }
  benchmark::AddCustomContext("isas_supported", isas);
}

}  // namespace bench
