// The attn command line: walkthrough, run, info, bench, profile.
#include <CLI/CLI.hpp>

#include <iostream>

#include "attn/runtime.hpp"
#include "walkthrough.hpp"

int main(int argc, char** argv) {
  CLI::App app{"attn: SIMD-optimised CPU attention (chapter 3 of Build a Large Language Model)"};
  app.require_subcommand(1);
  std::string section;
  CLI::App* walk = app.add_subcommand("walkthrough", "Print chapter 3's steps and numbers, section by section");
  walk->add_option("--section", section, "Print one section: 3.3, 3.4, 3.5, 3.6 or ex3.1, ex3.2, ex3.3");
  CLI11_PARSE(app, argc, argv);
  if (walk->parsed()) return attn::tools::walkthrough(std::cout, section);
  return 0;
}
