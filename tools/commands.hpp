// The attn subcommands. Each add_* function declares one subcommand and its options on
// `app` and returns the code that runs it; main() runs the one the user chose.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace attn::tools {

/// A declared subcommand: its CLI11 node and the function that runs it (exit status).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_walkthrough(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_profile(CLI::App& app);
Command add_run(CLI::App& app);
Command add_info(CLI::App& app);
Command add_serve(CLI::App& app);
Command add_loadgen(CLI::App& app);

}  // namespace attn::tools
