// Developer tool: times the GEMM driver with other register tiles and block sizes than
// GemmBlocking's, to re-tune them on a new machine. Each case runs once per round, round-robin,
// and keeps its best time, so a noisy shared machine still gives a fair comparison; the FMA
// peak is measured in every round too. Built only on request, one executable per ISA
// (SWEEP_ISA 0/1/2 = sse2/avx2/avx512, with that ISA's kernel flags; bench/sweep/CMakeLists.txt):
//
//   cmake --preset sweep && cmake --build --preset sweep
//   flock /tmp/attn-bench.lock build/sweep/bench/sweep/attn_gemm_sweep_avx2 [rounds]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/impl/gemm.hpp"
#include "kernels/impl/machine.hpp"

namespace {

using namespace attn::kernels;
using Arch =
    std::conditional_t<SWEEP_ISA == 2, xsimd::avx512bw,
                       std::conditional_t<SWEEP_ISA == 1, xsimd::fma3<xsimd::avx2>, xsimd::sse2>>;

// A blocking with the same members as GemmBlocking, every number a parameter.
template <std::size_t Mr, std::size_t Nv, std::size_t Kc, std::size_t Mc, std::size_t Expand = 1>
struct Blk {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::size_t kW = Batch::size, kNv = Nv, kNr = Nv * kW, kMr = Mr, kKc = Kc,
                               kMc = Mc, kAStride = Kc + 16, kAExpand = Expand;
};

struct Buffer {
  float* p;
  explicit Buffer(std::size_t n)
      : p(static_cast<float*>(std::aligned_alloc(64, (n * 4 + 127) / 64 * 64))) {
    std::mt19937 gen(static_cast<unsigned>(n));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (std::size_t i = 0; i < n; ++i) p[i] = dist(gen);
  }
  ~Buffer() { std::free(p); }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// GFLOP/s of C[m, n] = A[m, k] · Bᵀ computed in (task_m, task_n) calls, as the engine does.
template <class B>
double gflops(std::size_t m, std::size_t n, std::size_t k, std::size_t task_m, std::size_t task_n) {
  Buffer a(m * k), b(n * k), bias(n), c(m * n), scratch(B::kMc * B::kAStride * B::kAExpand);
  Buffer packed(GemmPacking<Arch, B>::packed_floats(n, k));
  GemmPacking<Arch, B>::pack_b(b.p, static_cast<std::ptrdiff_t>(k), 1, n, k, packed.p);
  auto once = [&] {
    for (std::size_t i0 = 0; i0 < m; i0 += task_m) {
      for (std::size_t j0 = 0; j0 < n; j0 += task_n) {
        GemmArgs g;
        g.a = a.p + i0 * k;
        g.lda = static_cast<std::ptrdiff_t>(k);
        g.packed_b = packed.p;
        g.n_total = n;
        g.m = std::min(task_m, m - i0);
        g.k = k;
        g.n0 = j0;
        g.n = std::min(task_n, n - j0);
        g.bias = bias.p;
        g.c = c.p + i0 * n;
        g.ldc = static_cast<std::ptrdiff_t>(n);
        g.scratch = scratch.p;
        GemmDriver<Arch, B>::run(g);
      }
    }
  };
  once();  // warm up
  double best = 1e30;
  for (int rep = 0; rep < 2; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * static_cast<double>(m * n * k) / best * 1e-9;
}

double peak_gflops() {
  const auto t0 = std::chrono::steady_clock::now();
  const double flops = PeakFma{}(Arch{}, 1 << 20);
  return flops * 1e-9 / seconds_since(t0);
}

struct Case {
  std::string name;
  std::function<double()> run;
  double best = 0;
};

template <class B>
void add_cases(std::vector<Case>& cases) {
  struct Shape {
    std::size_t m, n, k, task_m, task_n;
  };
  const std::size_t task_n = 768 / B::kNr * B::kNr;
  const Shape shapes[] = {
      {8192, 768, 768, 8192, 768}, {8192, 768, 768, 96, task_n}, {8192, 2304, 768, 96, task_n}};
  for (const Shape s : shapes) {
    char name[160];
    std::snprintf(name, sizeof name,
                  "%2zux%-2zu kc %4zu mc %3zu expand %zu | %zux%zux%zu in %zux%zu", B::kMr, B::kNr,
                  B::kKc, B::kMc, B::kAExpand, s.m, s.n, s.k, s.task_m, s.task_n);
    cases.push_back({name, [s] { return gflops<B>(s.m, s.n, s.k, s.task_m, s.task_n); }});
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  std::vector<Case> cases;
  if constexpr (SWEEP_ISA == 2) {
    add_cases<Blk<12, 2, 768, 96>>(cases);  // GemmBlocking<avx512bw>
    add_cases<Blk<12, 2, 256, 240>>(cases);
    add_cases<Blk<12, 2, 384, 96>>(cases);
    add_cases<Blk<12, 2, 768, 240>>(cases);
    add_cases<Blk<14, 2, 768, 112>>(cases);
    add_cases<Blk<6, 4, 768, 96>>(cases);
    add_cases<Blk<8, 3, 768, 96>>(cases);
  } else if constexpr (SWEEP_ISA == 1) {
    add_cases<Blk<6, 2, 768, 96>>(cases);  // GemmBlocking<fma3<avx2>>
    add_cases<Blk<6, 2, 256, 96>>(cases);
    add_cases<Blk<4, 3, 768, 96>>(cases);
    add_cases<Blk<5, 2, 768, 95>>(cases);
  } else {
    add_cases<Blk<6, 2, 256, 48, 4>>(cases);  // GemmBlocking<sse2>
    add_cases<Blk<6, 2, 768, 96, 1>>(cases);
    add_cases<Blk<4, 2, 256, 96, 4>>(cases);
    add_cases<Blk<6, 2, 256, 96, 4>>(cases);
  }
  double peak = 0;
  for (int round = 0; round < rounds; ++round) {
    peak = std::max(peak, peak_gflops());
    for (Case& c : cases) c.best = std::max(c.best, c.run());
  }
  std::printf("FMA peak %.1f GFLOP/s (best of %d rounds)\n", peak, rounds);
  for (const Case& c : cases) {
    std::printf("%s : %6.1f GFLOP/s %5.1f %%\n", c.name.c_str(), c.best, 100 * c.best / peak);
  }
}
