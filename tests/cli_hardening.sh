#!/bin/sh
# Hostile use of the attn command line (issue 13): out of memory, FIFOs, NaN, tolerances,
# exit codes, thread counts, the walkthrough, bench columns. Each check prints one line;
# the script fails when any check does. Usage: cli_hardening.sh <attn> <tests/data> <work dir>
set -u
ATTN=$1
DATA=$2
WORK=$3
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
failures=0

# check NAME WANT_RC STDERR_REGEX CMD...: runs CMD (under `timeout 60`), checks the exit code,
# that stderr matches STDERR_REGEX (grep -E; "" = anything), and that nothing crashed.
check() {
  name=$1 want=$2 re=$3
  shift 3
  timeout 60 "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  bad=""
  [ "$rc" = "$want" ] || bad="exit status $rc, expected $want;"
  if [ -n "$re" ] && ! grep -Eq -- "$re" "$WORK/err"; then bad="$bad stderr does not match '$re';"; fi
  if grep -Eq "terminate called|Sanitizer|runtime error|TBB Warning" "$WORK/err"; then bad="$bad crash or warning on stderr;"; fi
  if [ -n "$bad" ]; then
    echo "FAIL $name: $bad"
    echo "  command: $*"
    sed 's/^/  stderr: /' "$WORK/err" | head -5
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
}

# stdout_has NAME REGEX: the last check's stdout matches REGEX.
stdout_has() {
  if grep -Eq -- "$2" "$WORK/out"; then echo "ok   $1"; else
    echo "FAIL $1: stdout does not match '$2'"
    head -5 "$WORK/out" | sed 's/^/  stdout: /'
    failures=$((failures + 1))
  fi
}

# le64 N: N as 8 little-endian bytes (the safetensors header length).
le64() {
  n=$1 i=0
  while [ $i -lt 8 ]; do
    printf "\\$(printf '%03o' $((n & 255)))"
    n=$((n >> 8)) i=$((i + 1))
  done
}

# npy_header ROWS COLS: a version 1.0 .npy header for float32 [ROWS, COLS].
npy_header() {
  dict="{'descr': '<f4', 'fortran_order': False, 'shape': ($1, $2), }"
  len=$(((${#dict} + 11 + 63) / 64 * 64 - 10))
  printf '\223NUMPY\001\000'
  printf "\\$(printf '%03o' $((len & 255)))\\$(printf '%03o' $((len >> 8)))"
  printf '%s' "$dict"
  printf '%*s\n' $((len - ${#dict} - 1)) ""
}

# --- 1. Out of memory: refused with one line and exit 1, never an abort -------------------
# A v2 layer with d_in 1, d_out 65536 (786 KB of weights) over 65536 tokens (262 KB): the
# output alone is 16 GiB. The address-space bound makes every large allocation fail fast.
hdr='{"__metadata__":{"layout":"v2","num_heads":"1"},"W_query.weight":{"dtype":"F32","shape":[65536,1],"data_offsets":[0,262144]},"W_key.weight":{"dtype":"F32","shape":[65536,1],"data_offsets":[262144,524288]},"W_value.weight":{"dtype":"F32","shape":[65536,1],"data_offsets":[524288,786432]}}'
{ le64 ${#hdr}; printf '%s' "$hdr"; head -c 786432 /dev/zero; } >"$WORK/wide.safetensors"
{ npy_header 65536 1; head -c 262144 /dev/zero; } >"$WORK/long.npy"
limit="ulimit -v 4000000"
# A sanitizer build reserves terabytes of shadow address space and cannot start under the
# bound: there the checks below are skipped (the plain release build runs them).
if ! sh -c "$limit; exec \"\$0\" --version" "$ATTN" >/dev/null 2>&1; then
  echo "skip oom_*: $ATTN does not start under '$limit' (a sanitizer build)"
else
check oom_run 1 "^attn run: .*bytes" sh -c "$limit; exec \"\$0\" \"\$@\"" "$ATTN" run \
  --weights "$WORK/wide.safetensors" --input "$WORK/long.npy" --output "$WORK/y.npy"
check oom_bench_seq_len 1 "^attn bench: .*bytes" sh -c "$limit; exec \"\$0\" \"\$@\"" "$ATTN" bench \
  --seq-len 100000000 --batch 1 --warmup 0 --reps 1
check oom_bench_d_model 1 "^attn bench: .*init_weights_like_torch.*bytes" sh -c "$limit; exec \"\$0\" \"\$@\"" \
  "$ATTN" bench --d-model 1048576 --num-heads 1 --seq-len 1 --batch 1 --warmup 0 --reps 1
fi

# --- 2. --expect tolerances must be finite and >= 0; NaN is always outside -----------------
run_mha="run --weights $DATA/mha_b3.safetensors --input $DATA/mha_b3.input.npy"
for tol in "--atol -1 --rtol 0" "--atol nan" "--rtol inf" "--atol 1e999"; do
  # shellcheck disable=SC2086
  check "expect_tolerance($tol)" 2 "out of range|not a number" "$ATTN" $run_mha --expect "$DATA/causal_b3.output.npy" $tol
done
# NaN in the expectation (last value of a copy of the right answer) fails even at atol 1e30.
cp "$DATA/mha_b3.output.npy" "$WORK/nan_expect.npy"
printf '\000\000\300\177' | dd of="$WORK/nan_expect.npy" bs=1 seek=$(($(wc -c <"$DATA/mha_b3.output.npy") - 4)) conv=notrunc 2>/dev/null
# shellcheck disable=SC2086
check expect_nan_in_expectation 1 "1 of 198 values outside" "$ATTN" $run_mha --expect "$WORK/nan_expect.npy" --atol 1e30
# Inf in the expectation: |diff| = inf and atol + rtol*inf = inf made inf/inf = NaN, "inside".
cp "$DATA/mha_b3.output.npy" "$WORK/inf_expect.npy"
printf '\000\000\200\177' | dd of="$WORK/inf_expect.npy" bs=1 seek=$(($(wc -c <"$DATA/mha_b3.output.npy") - 4)) conv=notrunc 2>/dev/null
# shellcheck disable=SC2086
check expect_inf_in_expectation 1 "1 of 198 values outside" "$ATTN" $run_mha --expect "$WORK/inf_expect.npy"
# NaN in the output (from a NaN in the last input value: the last token's rows).
cp "$DATA/mha_b3.input.npy" "$WORK/nan_input.npy"
printf '\000\000\300\177' | dd of="$WORK/nan_input.npy" bs=1 seek=$(($(wc -c <"$DATA/mha_b3.input.npy") - 4)) conv=notrunc 2>/dev/null
check expect_nan_in_output 1 "values outside" "$ATTN" run --weights "$DATA/mha_b3.safetensors" \
  --input "$WORK/nan_input.npy" --expect "$DATA/mha_b3.output.npy" --atol 1e30

# --- 11. Non-finite input or output: one warning line, exit 0 -----------------------------
check nan_warning 0 "^attn run: warning: 1 non-finite \(NaN or Inf\) input values, 6 non-finite output values$" \
  "$ATTN" run --weights "$DATA/mha_b3.safetensors" --input "$WORK/nan_input.npy" --output "$WORK/y.npy"
[ "$(wc -l <"$WORK/err")" = 1 ] && echo "ok   nan_warning_one_line" || { echo "FAIL nan_warning_one_line"; failures=$((failures + 1)); }

# --- 3. A FIFO is refused at once (weights, input, info), never blocking -------------------
mkfifo "$WORK/fifo.npy" "$WORK/fifo.safetensors"
check fifo_input 1 "fifo.npy: not a regular file" "$ATTN" run --weights "$DATA/mha_b3.safetensors" --input "$WORK/fifo.npy"
check fifo_weights 1 "fifo.safetensors: not a regular file" "$ATTN" run --weights "$WORK/fifo.safetensors" \
  --input "$DATA/mha_b3.input.npy"
check fifo_info 1 "not a regular file" "$ATTN" info "$WORK/fifo.npy"

# --- 8. Exit codes: 2 for usage errors, one readable line ---------------------------------
check usage_unknown_flag 2 "^attn run: The following argument was not expected: --frob" "$ATTN" $run_mha --frob
check usage_no_subcommand 2 "^attn: A subcommand is required" "$ATTN"
check usage_unknown_subcommand 2 "^attn: unknown subcommand 'frobnicate' \(subcommands: walkthrough, bench, profile, run, info" \
  "$ATTN" frobnicate
check usage_heads_zero 2 "^attn run: --num-heads: 0 is out of range \(1 to [0-9]{1,15}\)" "$ATTN" $run_mha --heads 0
[ "$(wc -c <"$WORK/err")" -lt 200 ] && echo "ok   usage_heads_zero_short" || { echo "FAIL usage_heads_zero_short"; failures=$((failures + 1)); }
check usage_bad_threads 2 "^attn bench: --threads: -1 is out of range" "$ATTN" bench --threads 1,-1
check usage_bad_isa 2 "^attn run: --isa: neon not in" "$ATTN" $run_mha --isa neon
check usage_missing_value 2 "^attn run: " "$ATTN" run --weights
check usage_profile_preset 2 "--preset" "$ATTN" profile --preset gpt3 --seconds 0.01
check help 0 "" "$ATTN" run --help
check runtime_error 1 "^attn run: .*nope.safetensors: cannot open" "$ATTN" run --weights nope.safetensors --input x.npy

# --- 4. Threads beyond the CPUs: clamped, reported, nothing printed -----------------------
# Under ThreadSanitizer the uninstrumented TBB and OpenMP runtimes look racy (exit 66): the
# threaded backends are checked by the plain and ASan builds.
cpus=$(nproc)
case "${ATTN_SANITIZE:-}" in
  *thread*) echo "skip threads_clamped_*: ThreadSanitizer build (TBB and OpenMP are not instrumented)" ;;
  *)
    for backend in tbb openmp; do
      check "threads_clamped_$backend" 0 "kernels [a-z0-9]+, $cpus threads \($backend\)" "$ATTN" $run_mha -v \
        --threads $((cpus + 6)) --backend $backend --output "$WORK/y.npy"
    done
    check bench_threads_clamped 0 "" "$ATTN" bench --threads $((cpus + 6)) --batch 1 --seq-len 8 --d-model 16 \
      --num-heads 2 --warmup 0 --reps 1 --format csv
    stdout_has bench_threads_row "^fused,tbb,[a-z0-9]+,$cpus,"
    ;;
esac

# --- 7. Bench rows carry the peak they are divided by; decode rows label warm and cold ------
check bench_forward_columns 0 "" "$ATTN" bench --batch 1 --seq-len 8,16 --d-model 16 --num-heads 2 --warmup 0 \
  --reps 2 --format csv
stdout_has bench_peak_column "^impl,backend,isa,threads,d_model,num_heads,num_kv_heads,head_dim,qkv_bias,causal,rope,rope_theta,rope_dim,window,alibi,softcap,batch,seq_len,median_ms,min_ms,max_ms,gflops,tokens_per_s,peak_gflops,peak_fraction,"
check bench_decode_columns 0 "" "$ATTN" bench --decode --kv-len 16 --d-model 16 --num-heads 2 --warmup 0 --reps 2 \
  --format csv
stdout_has bench_decode_warm_cold "kv_len,median_ms,min_ms,max_ms,tokens_per_s,cold_median_ms,cold_sessions,cache_gb_s_warm,cache_gb_s_cold,memory_gb_s,bandwidth_fraction_cold"
if grep -Eq "p99|forward_ms" "$WORK/out"; then echo "FAIL bench_no_p99"; failures=$((failures + 1)); else echo "ok   bench_no_p99"; fi
# Issue 15: --weight-dtype sweeps a list; every row names its dtypes in fixed columns.
check bench_dtype_sweep 0 "" "$ATTN" bench --batch 1 --seq-len 8 --d-model 16 --num-heads 2 --warmup 0 \
  --reps 1 --weight-dtype f32,bf16,f16 --format csv
stdout_has bench_dtype_columns "peak_fraction,weight_dtype,compute_dtype,kv_dtype"
stdout_has bench_dtype_rows ",bf16,f32,f32,"

# --- 9. The walkthrough prints masked_simple and fails when a step fails -------------------
check walkthrough_3_5 0 "" "$ATTN" walkthrough --section 3.5
stdout_has walkthrough_masked_simple "^ +\[ 0.2041,  0.1659,  0.0000,  0.0000,  0.0000,  0.0000\],"
check walkthrough_step_fails 1 "step\(s\) failed" env ATTN_ISA=bogus "$ATTN" walkthrough --section 3.4

if [ $failures -gt 0 ]; then
  echo "cli_hardening: $failures checks failed"
  exit 1
fi
echo "cli_hardening: all checks passed"
