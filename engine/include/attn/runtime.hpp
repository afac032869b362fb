// What the library was built with and what this machine offers.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "attn/config.hpp"
#include "attn/export.hpp"

namespace attn {

struct RuntimeInfo {
  std::string version;                   ///< e.g. "0.1.0"
  std::string git_commit;                ///< the commit the library was built from, or ""
  std::string cpu_model;                 ///< from /proc/cpuinfo, or ""
  std::string default_isa;               ///< what Isa::kAuto resolves to now
  std::vector<std::string> isas;         ///< instruction sets this CPU can run, best first
  int cpus = 0;                          ///< CPUs in this process's affinity mask
};

/// Returns the build and machine description used by `attn` and the benchmarks.
ATTN_API RuntimeInfo runtime_info();

/// Resolves Isa::kAuto (ATTN_ISA, else the best supported) and checks that the CPU can run
/// the result; the error names the instruction set and what this CPU supports.
ATTN_API Result<Isa> resolve_isa(Isa requested);

/// Measures the FMA peak of one core for `isa` (Isa::kAuto: as resolve_isa), in GFLOP/s,
/// over about `seconds`. For reading benchmark results as a fraction of the machine.
ATTN_API double measure_peak_gflops(Isa isa = Isa::kAuto, double seconds = 0.2);

/// Measures streaming read bandwidth in GB/s: `threads` threads each read their own slice of
/// a `bytes` buffer (default 256 MiB, several times a typical L3), best of a few passes.
ATTN_API double measure_read_bandwidth(int threads = 1, std::size_t bytes = std::size_t{256} << 20,
                                       Isa isa = Isa::kAuto);

}  // namespace attn
