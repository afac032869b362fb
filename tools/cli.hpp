// The attn command line as a function, so main() and the CLI fuzzer run the same code.
#pragma once

namespace attn::tools {

/// Parses `argv` and runs the chosen subcommand. Returns the exit status: 0 success,
/// 1 bad input or runtime error (a file, a size the engine refuses, out of memory, a failed
/// --expect), 2 usage error (unknown flag or subcommand, missing or malformed flag value).
/// Never throws; every refusal prints one line on stderr.
int run_cli(int argc, const char* const* argv) noexcept;

}  // namespace attn::tools
