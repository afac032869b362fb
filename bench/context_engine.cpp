// The engine suite's context: libattn's own description of the build and the machine.
#include <benchmark/benchmark.h>

#include <string>

#include "attn/runtime.hpp"
#include "context.hpp"

namespace bench {

void add_context() {
  const attn::RuntimeInfo info = attn::runtime_info();
  benchmark::AddCustomContext("attn_version", info.version);
  benchmark::AddCustomContext("attn_commit", info.git_commit);
  benchmark::AddCustomContext("cpu_model", info.cpu_model);
  benchmark::AddCustomContext("isa", info.default_isa);
  std::string isas;
  for (const auto& s : info.isas) isas += (isas.empty() ? "" : ",") + s;
  benchmark::AddCustomContext("isas_supported", isas);
}

}  // namespace bench
