// The attn command line: declares every subcommand, parses, runs, and maps every failure
// to the documented exit status (see cli.hpp and docs/io.md).
#include "cli.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "attn/runtime.hpp"
#include "commands.hpp"

namespace attn::tools {
namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

// The extensions the 16-bit dtypes use (issue 15): F16C widens f16 weights in the avx2 and
// avx512 kernels; AVX512-BF16 runs compute_dtype bf16's vdpbf16ps GEMM (with --isa avx512).
std::string dtype_extensions_text(const RuntimeInfo& info) {
  const bool f16c = info.f16c;
  const bool bf16 = info.bf16_dot;
  return std::string(
             "\nweight dtypes: f32, bf16, f16 (16-bit weights widened to f32 in "
             "registers; f16 with F16C: ") +
         (f16c ? "yes" : "no, sse2 integer widening") +
         ")\ncompute dtypes: f32, bf16 (with bf16 weights: " +
         (bf16 ? "vdpbf16ps, AVX512-BF16"
               : "no AVX512-BF16 here, f32 FMAs on bf16-rounded operands") +
         ")\nkv dtypes: f32, bf16, f16, "
         "int8 "
         "(the decode kernels widen cache rows in registers)";
}

std::string version_text() {
  const RuntimeInfo info = runtime_info();
  std::string isas;
  for (const auto& i : info.isas) isas += (isas.empty() ? "" : ", ") + i;
  return "attn " + info.version + " (commit " +
         (info.git_commit.empty() ? "unknown" : info.git_commit) + ")\ncpu: " + info.cpu_model +
         ", " + std::to_string(info.cpus) + " CPUs usable\n" + "instruction sets: " + isas +
         "; kernels in use: " + info.default_isa + " (ATTN_ISA overrides)" +
         dtype_extensions_text(info);
}

int run_parsed(int argc, const char* const* argv) {
  CLI::App app{"attn: SIMD-optimised CPU attention (chapter 3 of Build a Large Language Model)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text);
  const std::vector<Command> commands = {add_walkthrough(app), add_bench(app), add_profile(app),
                                         add_run(app),         add_info(app),  add_serve(app),
                                         add_loadgen(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line naming the flag and the value; CLI11's own exit codes (105-110) are not ours.
    std::string where = "attn", names;
    for (const auto& c : commands) {
      if (c.app->parsed()) where += " " + c.app->get_name();
      names += (names.empty() ? "" : ", ") + c.app->get_name();
    }
    if (where == "attn" && argc > 1 &&
        argv[1][0] != '-') {  // CLI11 says "A subcommand is required"
      std::fprintf(stderr, "attn: unknown subcommand '%s' (subcommands: %s; usage: attn --help)\n",
                   argv[1], names.c_str());
      return kExitUsage;
    }
    std::fprintf(stderr, "%s: %s (usage: %s --help)\n", where.c_str(), e.what(), where.c_str());
    return kExitUsage;
  }
  for (const auto& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return kExitUsage;
}

}  // namespace

int run_cli(int argc, const char* const* argv) noexcept {
  // The last guard: every subcommand returns a Status-derived exit code and allocates
  // input-sized memory through checked paths; anything that still throws ends here.
  try {
    return run_parsed(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fputs("attn: out of memory\n", stderr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attn: internal error: %s\n", e.what());
  } catch (...) {
    std::fputs("attn: internal error: unknown exception\n", stderr);
  }
  return kExitError;
}

}  // namespace attn::tools
