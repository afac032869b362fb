# `attn run`, `attn info` and `attn profile` end to end over tests/data: every fixture matches
# PyTorch's output through the command line, and every bad input gives a clear error and a
# non-zero exit status (never a crash).
# Usage: cmake -DATTN=<attn binary> -DDATA=<tests/data> -DWORK=<scratch dir> -P io_cli.cmake

file(MAKE_DIRECTORY ${WORK})
set(failures 0)

# check(<name> <want: ok|fail|usage> <stdout regex or ""> <stderr regex or ""> <args...>)
function(check name want out_re err_re)
  execute_process(COMMAND ${ATTN} ${ARGN} WORKING_DIRECTORY ${DATA}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(bad "")
  if(want STREQUAL "ok" AND NOT rc EQUAL 0)
    set(bad "exit status ${rc}, expected 0")
  elseif(want STREQUAL "fail" AND NOT rc EQUAL 1)
    set(bad "exit status ${rc}, expected 1")
  elseif(want STREQUAL "usage" AND NOT rc EQUAL 2)
    set(bad "exit status ${rc}, expected 2 (usage error)")
  endif()
  if(out_re AND NOT out MATCHES "${out_re}")
    string(APPEND bad " stdout does not match '${out_re}'")
  endif()
  if(err_re AND NOT err MATCHES "${err_re}")
    string(APPEND bad " stderr does not match '${err_re}'")
  endif()
  if(err MATCHES "Sanitizer|runtime error|terminate called")
    string(APPEND bad " sanitizer or crash report")
  endif()
  if(bad)
    message(SEND_ERROR "io_cli ${name}: ${bad}\n  command: attn ${ARGN}\n  stdout: ${out}\n  stderr: ${err}")
    math(EXPR n "${failures} + 1")
    set(failures ${n} PARENT_SCOPE)
  endif()
endfunction()

# Every layout saved from PyTorch, through the command line, within 1e-5 + 1e-5*|ref|.
foreach(f v1_book v1_b3 v2_bias_b3 causal_b3 causal_bias_b1 wrapper_bias_b3 wrapper_b1 mha_b3
          mha_bias_b1 torch_mha_causal_b3 torch_mha_b1 mha_f16 causal_bf16)
  check(${f} ok "" "0 of [0-9]+ values outside" run --weights ${f}.safetensors --input ${f}.input.npy
        --output ${WORK}/${f}.npy --expect ${f}.output.npy)
  check(${f}_written ok "" "0 of [0-9]+ values outside" run --weights ${f}.safetensors
        --input ${f}.input.npy --expect ${WORK}/${f}.npy --atol 0 --rtol 0)
  check(info_${f} ok "layer: layout" "" info ${f}.safetensors)
endforeach()
foreach(i 0 1)
  check(gpt2_h${i} ok "" "0 of 360 values outside" run --weights gpt2_2layers.safetensors
        --prefix h.${i} --input gpt2_2layers.input.npy --expect gpt2_2layers.h${i}.output.npy)
endforeach()

# Hugging Face Llama / Qwen2 / Mistral and GPT-NeoX attention (PyTorch's outputs from the
# projects' own code): forward and token by token, and the layer flags of issue 14.
foreach(f hf_llama_gqa hf_qwen2_bias hf_mistral_window gpt_neox_partial hf_llama_long bloom_alibi
          gemma2_softcap)
  check(${f} ok "" "0 of [0-9]+ values outside" run --weights ${f}.safetensors --input ${f}.input.npy
        --expect ${f}.output.npy --output ${WORK}/${f}.npy)
  check(decode_${f} ok "" "0 of [0-9]+ values outside" run --weights ${f}.safetensors
        --input ${f}.input.npy --expect ${f}.output.npy --output ${WORK}/${f}.npy --decode)
endforeach()
check(hf_prefix ok "" "0 of 288 values outside" run --weights hf_llama_gqa.safetensors
      --prefix model.layers.0.self_attn --layout hf-llama --input hf_llama_gqa.input.npy
      --expect hf_llama_gqa.output.npy --output ${WORK}/p.npy)
check(neox_prefix ok "" "0 of 192 values outside" run --weights gpt_neox_partial.safetensors
      --prefix gpt_neox.layers.0.attention --input gpt_neox_partial.input.npy
      --expect gpt_neox_partial.output.npy --output ${WORK}/p.npy --decode)
# The flags restate the file (same output) or change it (a different output).
check(hf_flags_same ok "" "0 of 288 values outside" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --expect hf_llama_gqa.output.npy --output ${WORK}/p.npy
      --kv-heads 2 --head-dim 6 --rope neox --rope-theta 10000 --rope-dim 6 --window 0
      --scale 0.408248290463863 --decode)
check(hf_rope_gptj_differs fail "" "values outside" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --expect hf_llama_gqa.output.npy --output ${WORK}/p.npy
      --rope gptj)
check(hf_rope_none_differs fail "" "values outside" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --expect hf_llama_gqa.output.npy --output ${WORK}/p.npy
      --rope none)
check(hf_theta_differs fail "" "values outside" run --weights hf_qwen2_bias.safetensors
      --input hf_qwen2_bias.input.npy --expect hf_qwen2_bias.output.npy --output ${WORK}/p.npy
      --rope-theta 10000)
# ALiBi (BLOOM) and soft-capping (Gemma 2) from __metadata__, fused and decoding; the flags win.
check(bloom_decode ok "" "0 of 468 values outside" run --weights bloom_alibi.safetensors
      --input bloom_alibi.input.npy --expect bloom_alibi.output.npy --output ${WORK}/p.npy --decode)
check(bloom_flags_same ok "" "0 of 468 values outside" run --weights bloom_alibi.safetensors
      --input bloom_alibi.input.npy --expect bloom_alibi.output.npy --output ${WORK}/p.npy --alibi
      --rope none)
check(gemma_decode ok "" "0 of 240 values outside" run --weights gemma2_softcap.safetensors
      --input gemma2_softcap.input.npy --expect gemma2_softcap.output.npy --output ${WORK}/p.npy
      --decode)
check(gemma_softcap_differs fail "" "values outside" run --weights gemma2_softcap.safetensors
      --input gemma2_softcap.input.npy --expect gemma2_softcap.output.npy --output ${WORK}/p.npy
      --softcap 50)
check(alibi_with_rope fail "" "alibi and rope = neox" run --weights gpt_neox_partial.safetensors
      --prefix gpt_neox.layers.0.attention --input gpt_neox_partial.input.npy --alibi)
check(softcap_zero usage "" "--softcap: 0 is not a finite number > 0" run --weights
      gemma2_softcap.safetensors --input gemma2_softcap.input.npy --softcap 0)
check(info_alibi ok "alibi true, softcap 0" "" info bloom_alibi.safetensors)
check(info_softcap ok "softcap 2" "" info gemma2_softcap.safetensors)
check(info_hf ok "num_kv_heads 2.*rope neox \\(theta 10000, rope_dim 6\\)" "" info
      hf_llama_gqa.safetensors)
check(info_hf_notes ok "num_kv_heads = 2 \\(rows of 'model.layers.0.self_attn.k_proj.weight'"
      "" info hf_llama_gqa.safetensors)
check(info_hf_flags ok "num_kv_heads 2.*rope gptj \\(theta 500000, rope_dim 4\\).*window 3" ""
      info hf_qwen2_bias.safetensors --kv-heads 2 --head-dim 4 --rope gptj --rope-theta 500000
      --rope-dim 4 --window 3 --heads 6 --scale 0.5)
check(info_neox ok "layer: layout gpt-neox, prefix 'gpt_neox.layers.0.attention.'.*rope_dim 4" ""
      info gpt_neox_partial.safetensors)
check(hf_kv_mismatch fail "" "num_kv_heads = 4 \\(from the options\\).*k_proj.weight' has 12" run
      --weights hf_llama_gqa.safetensors --input hf_llama_gqa.input.npy --kv-heads 4)
check(hf_head_dim_mismatch fail "" "head_dim = 8 \\(from the options\\).*q_proj.weight' has 24"
      info hf_llama_gqa.safetensors --head-dim 8)
check(bad_rope usage "" "--rope: rotary not in" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --rope rotary)
check(bad_rope_dim fail "" "rope_dim = 5" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --rope-dim 5)
check(bad_theta usage "" "--rope-theta" run --weights hf_llama_gqa.safetensors
      --input hf_llama_gqa.input.npy --rope-theta nan)
# Bench presets carry the layer's fields; the layer flags win over the preset.
check(bench_llama_preset ok "2048,32,8,64,false,true,neox,500000,64,0,false,0,1,8," "" bench
      --preset llama-3.2-1b --batch 1 --seq-len 8 --reps 1 --warmup 0 --format csv)
check(bench_preset_flags ok "2048,32,32,64,false,true,none,10000,0,0,false,0,1,8," "" bench
      --preset llama-3.2-1b --batch 1 --seq-len 8 --reps 1 --warmup 0 --format csv --rope none
      --kv-heads 32 --rope-theta 10000)
check(bench_alibi_softcap ok "768,12,12,64,true,true,none,10000,0,0,true,30,1,8," "" bench
      --preset gpt2-small --batch 1 --seq-len 8 --reps 1 --warmup 0 --format csv --alibi
      --softcap 30)
check(bench_alibi_decode ok "768,12,4,64,true,true,none,10000,0,0,true,30,8," "" bench
      --preset gpt2-small --kv-len 8 --reps 1 --warmup 0 --format csv --alibi --softcap 30
      --kv-heads 4 --decode)
# A dtype sweep leaves out compute bf16 with f32 weights (the engine refuses it) and runs the
# three other combinations; asked for alone, that combination is the engine's error.
check(bench_compute_sweep ok ",f32,f32,f32,[^\n]*\n[^\n]*,bf16,f32,f32,[^\n]*\n[^\n]*,bf16,bf16,f32," ""
      bench --preset gpt2-small --batch 1 --seq-len 8 --reps 1 --warmup 0 --format csv
      --weight-dtype f32,bf16 --compute-dtype f32,bf16)
check(bench_compute_alone fail "" "compute_dtype = bf16 multiplies bf16 weights" bench
      --preset gpt2-small --batch 1 --seq-len 8 --reps 1 --warmup 0 --compute-dtype bf16)
check(bench_bad_preset usage "" "--preset: llama not in" bench --preset llama)

# Options: backends, instruction set, threads, overrides, printing to stdout.
check(serial ok "" "0 of" run --weights mha_b3.safetensors --input mha_b3.input.npy
      --expect mha_b3.output.npy --backend serial --threads 1)
check(openmp ok "" "0 of" run --weights mha_b3.safetensors --input mha_b3.input.npy
      --expect mha_b3.output.npy --backend openmp --isa sse2)
# Token by token through KV-cache sessions: the same output as one forward.
check(decode ok "" "0 of 198 values outside" run --weights mha_b3.safetensors --input mha_b3.input.npy
      --expect mha_b3.output.npy --decode)
check(decode_gpt2 ok "" "0 of 360 values outside" run --weights gpt2_2layers.safetensors --prefix h.1
      --input gpt2_2layers.input.npy --expect gpt2_2layers.h1.output.npy --decode)
check(decode_non_causal fail "" "KV-cache sessions need causal attention" run
      --weights mha_b3.safetensors --input mha_b3.input.npy --no-causal --decode)
check(causal_without_mask fail "" "variant causal contradicts mask none" run
      --weights causal_b3.safetensors --input causal_b3.input.npy --no-causal)
check(stdout ok "float32 \\[6, 2\\]" "" run --weights v1_book.safetensors --input v1_book.input.npy)
check(verbose ok "" "context_length = 16 \\(from the mask buffer 'h.1.attn.bias'\\)" run -v
      --weights gpt2_2layers.safetensors --prefix h.1 --input gpt2_2layers.input.npy
      --output ${WORK}/g.npy)
check(no_causal_differs fail "" "values outside" run --weights mha_b3.safetensors
      --input mha_b3.input.npy --expect mha_b3.output.npy --no-causal)
check(help_run ok "--weights" "" run --help)
check(help_info ok "--prefix" "" info --help)
check(info_npy ok "float32 \\[3, 11, 7\\]" "" info mha_b3.input.npy)

# Errors: clear message on stderr, exit status 1 (bad input) or 2 (bad flag value).
check(corrupt_truncated fail "" "truncated.safetensors: tensor 'W_value.weight': data_offsets" info
      corrupt/truncated.safetensors)
check(corrupt_header fail "" "header length 1152921504606846976 runs past the end" info
      corrupt/huge_header.safetensors)
check(corrupt_json fail "" "header is not valid JSON" info corrupt/bad_json.safetensors)
check(corrupt_overlap fail "" "tensor 'b': data_offsets \\[4, 12\\] overlap tensor 'a'" run
      --weights corrupt/overlap.safetensors --input mha_b3.input.npy)
check(bad_npy fail "" "dtype '<f8' is not supported" run --weights mha_b3.safetensors
      --input corrupt/f64.npy)
check(npy_as_weights fail "" "header length .* runs past the end" run --weights mha_b3.input.npy
      --input mha_b3.input.npy)
check(missing_file fail "" "nope.safetensors: cannot open" run --weights nope.safetensors
      --input mha_b3.input.npy)
check(gpt2_no_prefix fail "" "holds 2 attention layers; choose one with a prefix \\('h.0.', 'h.1.'\\)"
      run --weights gpt2_2layers.safetensors --input gpt2_2layers.input.npy)
check(wrong_d_in fail "" "shape \\[6, 3\\] does not fit the layer: expected \\[batch, seq_len, 7\\]" run
      --weights mha_b3.safetensors --input v1_book.input.npy)
check(heads_mismatch fail "" "d_out = 6 is not divisible by num_heads = 4" run
      --weights mha_b3.safetensors --input mha_b3.input.npy --heads 4)
check(too_long fail "" "seq_len 5 exceeds context_length 3" run --weights causal_b3.safetensors
      --input causal_b3.input.npy --context-length 3)
check(bad_layout usage "" "--layout: unknown layout 'bert'" run --weights mha_b3.safetensors
      --input mha_b3.input.npy --layout bert)
check(wrong_layout fail "" "found no layer of layout gpt2" info mha_b3.safetensors --layout gpt2)
check(expect_shape fail "" "has shape \\[3, 11, 6\\] but the output is \\[3, 5, 5\\]" run
      --weights causal_b3.safetensors --input causal_b3.input.npy --expect mha_b3.output.npy)
check(bad_output fail "" "cannot create" run --weights mha_b3.safetensors
      --input mha_b3.input.npy --output /nonexistent-dir/y.npy)
check(bad_isa usage "" "--isa: neon not in" run --weights mha_b3.safetensors
      --input mha_b3.input.npy --isa neon)

# Issue 15 dtypes: 16-bit weights stay close to PyTorch's f32 output; a setting not built yet
# (compute bf16) fails naming the value; a name no setting takes is a usage error; info shows the bytes.
foreach(d bf16 f16)
  check(weight_dtype_${d} ok "" "0 of [0-9]+ values outside" run --weights hf_llama_gqa.safetensors
        --input hf_llama_gqa.input.npy --expect hf_llama_gqa.output.npy --weight-dtype ${d}
        --atol 1e-2 --rtol 1e-2)
endforeach()
# 16-bit and int8 caches: token-by-token decode (prefill half, then steps) stays close to
# PyTorch's f32 output; bounds about twice the errors measured (docs/precision.md).
foreach(d bf16 f16 int8)
  check(kv_dtype_${d} ok "" "0 of [0-9]+ values outside" run --weights hf_llama_gqa.safetensors
        --input hf_llama_gqa.input.npy --expect hf_llama_gqa.output.npy --decode --kv-dtype ${d}
        --atol 2e-2 --rtol 2e-2)
endforeach()
# compute_dtype bf16 (activations rounded to bf16 too) against PyTorch's f32 output, on every
# ISA this CPU runs (avx512: vdpbf16ps where `attn --version` says the CPU has AVX512-BF16, the
# rounded-A FMA kernel otherwise); it needs bf16 weights, and says so.
execute_process(COMMAND ${ATTN} --version OUTPUT_VARIABLE version_text)
set(compute_isas sse2 avx2)
if(version_text MATCHES "instruction sets: [^\n]*avx512")
  list(APPEND compute_isas avx512)
endif()
foreach(isa ${compute_isas})
  check(compute_dtype_bf16_${isa} ok "" "0 of [0-9]+ values outside" run
        --weights hf_llama_gqa.safetensors --input hf_llama_gqa.input.npy
        --expect hf_llama_gqa.output.npy --weight-dtype bf16 --compute-dtype bf16 --isa ${isa}
        --atol 2e-2 --rtol 2e-2)
endforeach()
check(compute_dtype_bf16_f32_weights fail "" "compute_dtype = bf16 multiplies bf16 weights" run
      --weights mha_b3.safetensors --input mha_b3.input.npy --compute-dtype bf16)
check(bad_weight_dtype usage "" "--weight-dtype: int8 not in" run --weights mha_b3.safetensors
      --input mha_b3.input.npy --weight-dtype int8)
# attn profile takes the same dtype flags (one value each), declared by the same DTypeFlags.
check(profile_weight_dtype_bf16 ok "" "threads, weights bf16, for" profile --preset gpt2-small
      --seconds 0.01 --threads 1 --weight-dtype bf16)
check(profile_bad_weight_dtype usage "" "--weight-dtype: f64 not in" profile --weight-dtype f64)
check(profile_kv_dtype_int8 ok "" "threads, weights f32, for" profile --preset gpt2-small
      --seconds 0.01 --threads 1 --kv-dtype int8)
check(info_dtype_bytes ok "packed weights: f32 [0-9]+ bytes, bf16 [0-9]+ bytes, f16 [0-9]+ bytes.*kv cache per token: f32 [0-9]+ bytes, bf16" ""
      info hf_llama_gqa.safetensors)

if(failures GREATER 0)
  message(FATAL_ERROR "io_cli: ${failures} checks failed")
endif()
