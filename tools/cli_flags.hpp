// Flags shared by the subcommands: readable range checks and the run options (--threads,
// --backend, --isa) declared and validated in one place.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
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

/// Largest size a size flag accepts: beyond what attn::validate allows, so the library's
/// own message (naming the config field) is what a user sees for a too-large layer.
inline constexpr std::int64_t kMaxSizeFlag = std::int64_t{1} << 40;
/// Largest --threads value (requests above the CPUs available are clamped by the engine).
inline constexpr std::int64_t kMaxThreadsFlag = 1024;

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

}  // namespace attn::tools
