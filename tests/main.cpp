// Catch2's main for both test executables (attn_tests, attn_kernel_tests).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
