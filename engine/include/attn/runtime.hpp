// What the library was built with and what this machine offers.
#pragma once

#include <string>
#include <vector>

#include "attn/config.hpp"
#include "attn/export.hpp"

namespace attn {

struct RuntimeInfo {
  std::string version;            ///< e.g. "0.1.0"
  std::string git_commit;         ///< the commit the library was built from, or ""
  std::string cpu_model;          ///< from /proc/cpuinfo, or ""
  std::string default_isa;        ///< what Isa::kAuto resolves to now
  std::vector<std::string> isas;  ///< instruction sets this CPU can run, best first
  int cpus = 0;                   ///< CPUs in this process's affinity mask
  bool f16c = false;      ///< the CPU converts binary16 in hardware (f16 weights widen with it)
  bool bf16_dot = false;  ///< AVX512-BF16 (vdpbf16ps) is usable on this CPU and built in
};

/// Returns the build and machine description used by `attn` and the benchmarks.
ATTN_API RuntimeInfo runtime_info();

/// Resolves Isa::kAuto (ATTN_ISA, else the best supported) and checks that the CPU can run
/// the result; the error names the instruction set and what this CPU supports.
ATTN_API Result<Isa> resolve_isa(Isa requested);

}  // namespace attn
