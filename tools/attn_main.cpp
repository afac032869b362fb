// The attn command line. Results go to stdout or files, errors and progress to stderr.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "attn/runtime.hpp"
#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"attn: SIMD-optimised CPU attention (chapter 3 of Build a Large Language Model)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    const attn::RuntimeInfo info = attn::runtime_info();
    std::string isas;
    for (const auto& i : info.isas) isas += (isas.empty() ? "" : ", ") + i;
    return "attn " + info.version + " (commit " + (info.git_commit.empty() ? "unknown" : info.git_commit) +
           ")\ncpu: " + info.cpu_model + ", " + std::to_string(info.cpus) + " CPUs usable\n" +
           "instruction sets: " + isas + "; kernels in use: " + info.default_isa +
           " (ATTN_ISA overrides)";
  });
  const std::vector<attn::tools::Command> commands = {
      attn::tools::add_walkthrough(app),
      attn::tools::add_bench(app),
      attn::tools::add_profile(app),
      attn::tools::add_run(app),
      attn::tools::add_info(app),
  };
  CLI11_PARSE(app, argc, argv);
  for (const auto& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  return 1;
}
