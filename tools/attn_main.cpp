// The attn command line. Results go to stdout or files, errors and progress to stderr.
#include "cli.hpp"

int main(int argc, char** argv) { return attn::tools::run_cli(argc, argv); }
