#!/usr/bin/env bash
# The jobs CI runs after the README's test command: the GEMM blocking sweep built (it is not
# part of the default build, so only this notices when it breaks), the test suite under
# ASan+UBSan and under TSan, then every libFuzzer harness for a bounded time on its
# committed seed corpus. Usage: tools/ci_checks.sh [sweep] [asan] [tsan] [fuzz]  (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=("$@")
[ ${#jobs[@]} -gt 0 ] || jobs=(sweep asan tsan fuzz)
fuzz_seconds=${ATTN_FUZZ_SECONDS:-60}

for job in "${jobs[@]}"; do
  echo "ci: === $job ===" >&2
  case "$job" in
    sweep)
      cmake --preset sweep >/dev/null
      cmake --build --preset sweep
      ;;
    asan | tsan)
      cmake --preset "$job" >/dev/null
      cmake --build --preset "$job"
      ctest --preset "$job" -j2
      ;;
    fuzz)
      tools/setup.sh clang-14 libfuzzer-14-dev libclang-rt-14-dev libomp-14-dev
      cmake --preset fuzz >/dev/null
      cmake --build --preset fuzz
      for fuzzer in build/fuzz/tests/fuzz/fuzz_*; do
        name=$(basename "$fuzzer" | sed 's/^fuzz_//')
        work=$(mktemp -d)  # new inputs go here; the committed corpus stays as it is
        echo "ci: fuzzing $name for ${fuzz_seconds}s" >&2
        ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
          "$fuzzer" -max_total_time="$fuzz_seconds" -rss_limit_mb=4096 -print_final_stats=1 \
          -artifact_prefix="$work/" "$work" "tests/fuzz/corpus/$name" 2>&1 | grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE|==[0-9]+==ERROR)|SUMMARY' || true
        if ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* >/dev/null 2>&1; then
          echo "ci: fuzzer $name found a failing input:" >&2
          ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null >&2
          exit 1
        fi
        rm -rf "$work"
      done
      ;;
    *)
      echo "ci: unknown job $job" >&2
      exit 2
      ;;
  esac
done
