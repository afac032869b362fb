// The attn command line. Results go to stdout or files, errors and progress to stderr.
#include <CLI/CLI.hpp>

#include <vector>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"attn: SIMD-optimised CPU attention (chapter 3 of Build a Large Language Model)"};
  app.require_subcommand(1);
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
