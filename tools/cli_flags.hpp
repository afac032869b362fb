// Flags shared by the subcommands: readable range checks and the run options (--threads,
// --backend, --isa) declared and validated in one place.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "attn/config.hpp"

namespace attn::tools {

/// Checks that an integer flag value lies in [lo, hi]; the message names the value and the
/// range in plain digits (CLI::PositiveNumber prints 1.79769e+308 in full).
inline CLI::Validator in_range(std::int64_t lo, std::int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        std::int64_t v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "'" + text + "' is not an integer";
        if (v < lo || v > hi) {
          return text + " is out of range (" + std::to_string(lo) + " to " + std::to_string(hi) +
                 ")";
        }
        return {};
      },
      "INT in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

/// Checks that a floating-point flag value is finite and lies in [lo, hi].
inline CLI::Validator finite_in_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "'" + text + "' is not a number";
        if (!(v >= lo && v <= hi)) {
          return text + " is out of range (a finite number from " + CLI::detail::to_string(lo) +
                 " to " + CLI::detail::to_string(hi) + ")";
        }
        return {};
      },
      "FLOAT in [" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + "]");
}

/// Checks that a floating-point flag value is finite and > 0.
inline CLI::Validator finite_positive() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return "'" + text + "' is not a number";
        if (!(v > 0 && v <= std::numeric_limits<double>::max()))
          return text + " is not a finite number > 0";
        return {};
      },
      "FLOAT > 0");
}

/// Largest size a size flag accepts: beyond what attn::validate allows, so the library's
/// own message (naming the config field) is what a user sees for a too-large layer.
inline constexpr std::int64_t kMaxSizeFlag = std::int64_t{1} << 40;
/// Largest --threads value (requests above the CPUs available are clamped by the engine).
inline constexpr std::int64_t kMaxThreadsFlag = 1024;

/// The layer's shape beyond d_model and num_heads, for `attn run`, `attn info` and `attn
/// bench` (names fixed by issue 14): --kv-heads, --head-dim, --rope, --rope-theta, --rope-dim,
/// --scale, --window, --alibi, --softcap. A flag not given leaves the value to the file (or the
/// preset).
struct LayerShapeFlags {
  std::int64_t kv_heads = 0, head_dim = 0, rope_dim = 0, window = 0;
  std::string rope = "none";
  double rope_theta = 10000, scale = 0, softcap = 0;
  bool alibi = false;
  CLI::Option *kv_heads_opt = nullptr, *head_dim_opt = nullptr, *rope_opt = nullptr,
              *rope_theta_opt = nullptr, *rope_dim_opt = nullptr, *scale_opt = nullptr,
              *window_opt = nullptr, *alibi_opt = nullptr, *softcap_opt = nullptr;

  /// Declares the flags on `sub`.
  void add_to(CLI::App* sub) {
    const double kMax = std::numeric_limits<double>::max();
    kv_heads_opt = sub->add_option("--kv-heads", kv_heads,
                                   "Key/value heads (grouped-query attention; 1 = multi-query); "
                                   "must divide num_heads (else __metadata__['num_kv_heads'])")
                       ->check(in_range(1, kMaxSizeFlag));
    head_dim_opt = sub->add_option("--head-dim", head_dim,
                                   "Features per head when num_heads * head_dim != d_model "
                                   "(else __metadata__['head_dim'] or the shapes)")
                       ->check(in_range(1, kMaxSizeFlag));
    rope_opt = sub->add_option("--rope", rope,
                               "Rotary position embeddings: none, neox (rotate-half) or gptj "
                               "(interleaved) (else __metadata__['rope'] or the layout's default)")
                   ->check(CLI::IsMember({"none", "neox", "gptj"}));
    rope_theta_opt = sub->add_option("--rope-theta", rope_theta, "Rotary base (default 10000)")
                         ->check(finite_in_range(-kMax, kMax));
    rope_dim_opt = sub->add_option("--rope-dim", rope_dim,
                                   "Rotated features per head, even, <= head_dim (partial "
                                   "rotary); 0 = head_dim")
                       ->check(in_range(0, kMaxSizeFlag));
    scale_opt = sub->add_option("--scale", scale, "Multiplier of q.k; 0 = 1/sqrt(head_dim)")
                    ->check(finite_in_range(-kMax, kMax));
    window_opt = sub->add_option("--window", window,
                                 "Sliding window: each token sees at most the last N tokens "
                                 "(causal only); 0 = no window")
                     ->check(in_range(0, kMaxSizeFlag));
    alibi_opt = sub->add_flag("--alibi", alibi,
                              "ALiBi position biases (BLOOM, MPT): per-head slopes times "
                              "(key position - query position); not with --rope "
                              "(else __metadata__['alibi'])");
    softcap_opt = sub->add_option("--softcap", softcap,
                                  "Logit soft-capping (Gemma 2): each scaled score s becomes "
                                  "F * tanh(s / F); F > 0 (else __metadata__['softcap'])")
                      ->check(finite_positive());
  }

  /// Sets the fields of `c` (a LayerConfig or io::LayerOptions) whose flag was given.
  template <class Config>
  void apply(Config& c) const {
    if (kv_heads_opt->count() > 0) c.num_kv_heads = kv_heads;
    if (head_dim_opt->count() > 0) c.head_dim = head_dim;
    if (rope_opt->count() > 0) c.rope = parse_rope(rope).value();  // validated at parse time
    if (rope_theta_opt->count() > 0) c.rope_theta = rope_theta;
    if (rope_dim_opt->count() > 0) c.rope_dim = rope_dim;
    if (scale_opt->count() > 0) c.scale = scale;
    if (window_opt->count() > 0) c.window = window;
    if (alibi_opt->count() > 0) c.alibi = alibi;
    if (softcap_opt->count() > 0) c.softcap = softcap;
  }
};

/// How a layer runs: --threads, --backend, --isa, for every subcommand that runs one.
struct RunFlags {
  std::vector<std::int64_t> threads{0};
  std::vector<std::string> backends{"tbb"};
  std::string isa = "auto";

  /// Declares the flags on `sub`; with `sweep`, --threads and --backend take comma-separated
  /// lists (attn bench), else one value each (the last one given wins).
  void add_to(CLI::App* sub, bool sweep) {
    CLI::Option* t =
        sub->add_option("--threads", threads,
                        std::string("Worker threads") + (sweep ? " (comma-separated)" : "") +
                            "; 0 = the CPUs this process may use; more than that "
                            "is clamped to it")
            ->check(in_range(0, kMaxThreadsFlag))
            ->capture_default_str();
    CLI::Option* b = sub->add_option("--backend", backends,
                                     std::string("Threading: tbb, openmp or serial") +
                                         (sweep ? " (comma-separated)" : ""))
                         ->check(CLI::IsMember({"tbb", "openmp", "serial"}))
                         ->capture_default_str();
    for (CLI::Option* o : {t, b}) {
      if (sweep) {
        o->delimiter(',');
      } else {
        o->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
    }
    sub->add_option("--isa", isa, "Kernels: auto, sse2, avx2 or avx512 (auto honours ATTN_ISA)")
        ->check(CLI::IsMember({"auto", "sse2", "avx2", "avx512"}))
        ->capture_default_str();
  }

  /// Sets `c`'s threads, backend and isa (the flags were validated at parse time).
  Status apply(RunOptions& c, std::int64_t thread_count, const std::string& backend) const {
    Result<Backend> b = parse_backend(backend);
    if (!b.ok()) return b.status();
    Result<Isa> i = parse_isa(isa);
    if (!i.ok()) return i.status();
    c.threads = static_cast<int>(thread_count);
    c.backend = *b;
    c.isa = *i;
    return {};
  }
  /// As above with the first (for one-run subcommands: the only) thread count and backend.
  Status apply(RunOptions& c) const { return apply(c, threads.front(), backends.front()); }
};

/// The element types: --weight-dtype, --compute-dtype, --kv-dtype (names fixed by issue 15).
/// With `sweep` (attn bench) each takes a comma-separated list and combos() is their product.
struct DTypeFlags {
  std::vector<std::string> weight{"f32"}, compute{"f32"}, kv{"f32"};

  void add_to(CLI::App* sub, bool sweep) {
    const std::string list = sweep ? " (comma-separated)" : "";
    CLI::Option* w = sub->add_option("--weight-dtype", weight,
                                     "Packed projection weights: f32, bf16 or f16" + list)
                         ->check(CLI::IsMember({"f32", "bf16", "f16"}))
                         ->capture_default_str();
    CLI::Option* c = sub->add_option("--compute-dtype", compute,
                                     "Projection multiply-adds: f32 or bf16 (activations "
                                     "rounded to bf16 too; needs --weight-dtype bf16; "
                                     "vdpbf16ps on AVX512-BF16)" +
                                         list)
                         ->check(CLI::IsMember({"f32", "bf16"}))
                         ->capture_default_str();
    CLI::Option* k =
        sub->add_option("--kv-dtype", kv, "Session key/value cache: f32, bf16, f16 or int8" + list)
            ->check(CLI::IsMember({"f32", "bf16", "f16", "int8"}))
            ->capture_default_str();
    for (CLI::Option* o : {w, c, k}) {
      if (sweep) {
        o->delimiter(',');
      } else {
        o->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
    }
  }

  /// One (weight, compute, kv) choice.
  struct Combo {
    DType weight = DType::kF32, compute = DType::kF32, kv = DType::kF32;
    void apply(RunOptions& o) const {
      o.weight_dtype = weight;
      o.compute_dtype = compute;
      o.kv_dtype = kv;
    }
  };
  /// Every combination of the lists, weight slowest (names were validated at parse time).
  /// compute bf16 with weights other than bf16 (which the engine refuses) is left out of a
  /// sweep that has other combinations; alone, it stays, for the engine's error.
  std::vector<Combo> combos() const {
    std::vector<Combo> out, refused;
    for (const std::string& w : weight) {
      for (const std::string& c : compute) {
        for (const std::string& k : kv) {
          const Combo combo{parse_dtype(w).value(), parse_dtype(c).value(), parse_dtype(k).value()};
          const bool valid = c != "bf16" || w == "bf16";
          (valid ? out : refused).push_back(combo);
        }
      }
    }
    return out.empty() ? refused : out;
  }
  /// Sets `o`'s dtypes to the first (for attn run: the only) choice.
  void apply(RunOptions& o) const { combos().front().apply(o); }
};

}  // namespace attn::tools
