#!/bin/sh
# `mpirun -np P attn run --distributed` (forward and --decode) against PyTorch's outputs, and
# heads that do not divide by the ranks refused on every rank without a hang; bench --distributed
# with the dtype flags.
# Usage: cli.sh ATTN DATA_DIR MPIRUN [MPIRUN_ARGS...]
attn=$1
data=$2
shift 2
failures=0
check() {  # name expected-exit-status pattern ranks args...
  name=$1 want=$2 pattern=$3 ranks=$4
  shift 4
  out=$(cd "$data" && timeout 120 "$@" 2>&1)
  rc=$?
  if [ "$want" = ok ] && [ "$rc" -ne 0 ] || [ "$want" = fail ] && [ "$rc" -eq 0 ] || ! echo "$out" | grep -q -- "$pattern"; then
    echo "mpi_cli $name: exit $rc, wanted $want and '$pattern' in:"
    echo "$out"
    failures=$((failures + 1))
  else
    echo "mpi_cli $name: ok"
  fi
}
for ranks in 1 2 4; do
  check "mha_np$ranks" ok "0 of 72 values outside" "$ranks" "$@" -np "$ranks" "$attn" run --distributed \
    --weights mha_bias_b1.safetensors --input mha_bias_b1.input.npy --expect mha_bias_b1.output.npy --output /dev/null
done
check decode_np2 ok "0 of 72 values outside" 2 "$@" -np 2 "$attn" run --distributed --decode \
  --weights mha_bias_b1.safetensors --input mha_bias_b1.input.npy --expect mha_bias_b1.output.npy --output /dev/null
check gpt2_np3 ok "0 of 360 values outside" 3 "$@" -np 3 "$attn" run --distributed --decode --weights \
  gpt2_2layers.safetensors --prefix h.1 --input gpt2_2layers.input.npy --expect gpt2_2layers.h1.output.npy --output /dev/null
check wrapper_np2 ok "0 of" 2 "$@" -np 2 "$attn" run --distributed --weights wrapper_b1.safetensors \
  --input wrapper_b1.input.npy --expect wrapper_b1.output.npy --output /dev/null
check gpt2_np2_refused fail "num_heads = 3 (num_kv_heads = 3) is not divisible by the 2 ranks" 2 "$@" -np 2 "$attn" \
  run --distributed --weights gpt2_2layers.safetensors --prefix h.1 --input gpt2_2layers.input.npy --output /dev/null
# bench --distributed sweeps the dtype flags as bench does: every rank packs its heads in them.
check bench_dtypes_np2 ok ",bf16,f32,f32," 2 "$@" -np 2 "$attn" bench --distributed --batch 1 --seq-len 8 \
  --d-model 16 --num-heads 2 --warmup 0 --reps 1 --weight-dtype f32,bf16,f16 --format csv
check bench_kv_dtype_np2 ok ",f32,f32,bf16," 2 "$@" -np 2 "$attn" bench --distributed --batch 1 \
  --seq-len 8 --d-model 16 --num-heads 2 --warmup 0 --reps 1 --kv-dtype bf16 --format csv
check decode_int8_np2 ok "0 of 72 values outside" 2 "$@" -np 2 "$attn" run --distributed --decode \
  --weights mha_bias_b1.safetensors --input mha_bias_b1.input.npy --expect mha_bias_b1.output.npy \
  --output /dev/null --kv-dtype int8 --atol 2e-2 --rtol 2e-2
check bench_bad_dtype_np2 fail "--weight-dtype: f64 not in" 2 "$@" -np 2 "$attn" bench --distributed \
  --weight-dtype f64
[ "$failures" -eq 0 ] || { echo "mpi_cli: $failures checks failed"; exit 1; }
