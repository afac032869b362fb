// Benchmark probes: the machine's FMA peak and read bandwidth, the rooflines that benchmark
// results are divided by. Not needed to run the engine; attn bench and bench/ use them.
#pragma once

#include <cstddef>

#include "attn/config.hpp"
#include "attn/export.hpp"

namespace attn {

/// Measures the FMA peak of one core for `isa` (Isa::kAuto: as resolve_isa), in GFLOP/s,
/// over about `seconds`. For reading benchmark results as a fraction of the machine.
ATTN_API double measure_peak_gflops(Isa isa = Isa::kAuto, double seconds = 0.2);

/// Measures the bf16 dot-product peak of one core (AVX512-BF16 vdpbf16ps, 4 FLOPs per f32
/// lane), in GFLOP/s, over about `seconds`: the roof of compute_dtype bf16 (issue 15). Returns
/// 0 when this CPU or this build has no AVX512-BF16.
ATTN_API double measure_peak_bf16_gflops(double seconds = 0.2);

/// Measures streaming read bandwidth in GB/s: `threads` threads each read their own slice of
/// a `bytes` buffer (default 256 MiB, several times a typical L3), best of a few passes.
ATTN_API double measure_read_bandwidth(int threads = 1, std::size_t bytes = std::size_t{256} << 20,
                                       Isa isa = Isa::kAuto);

}  // namespace attn
