// Benchmark main: records the build and machine (commit, CPU, instruction set) in the context.
#include <benchmark/benchmark.h>

#include "context.hpp"

int main(int argc, char** argv) {
  bench::add_context();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
