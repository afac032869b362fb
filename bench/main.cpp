// Benchmark main: records the build and machine (commit, CPU, instruction set) in the context.
#include <benchmark/benchmark.h>

#include "attn/runtime.hpp"

int main(int argc, char** argv) {
  const attn::RuntimeInfo info = attn::runtime_info();
  benchmark::AddCustomContext("attn_version", info.version);
  benchmark::AddCustomContext("attn_commit", info.git_commit);
  benchmark::AddCustomContext("cpu_model", info.cpu_model);
  benchmark::AddCustomContext("isa", info.default_isa);
  std::string isas;
  for (const auto& s : info.isas) isas += (isas.empty() ? "" : ",") + s;
  benchmark::AddCustomContext("isas_supported", isas);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
