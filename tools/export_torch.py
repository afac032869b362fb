#!/usr/bin/python3
"""Exports PyTorch attention modules for attn: weights as safetensors (config in __metadata__)
and an input/output pair as .npy. Uses only PyTorch and the standard library: both formats are
written by hand (no numpy, no safetensors package).

  export_torch.py model --class MultiHeadAttention --d-in 768 --d-out 768 --heads 12 \\
      --context-length 1024 --seq-len 8 --out mha     # mha.safetensors, mha.input.npy, mha.output.npy
  export_torch.py fixtures --out-dir tests/data       # the golden fixtures of the test suite

From Python: export(module, "prefix", x) with one of the classes below or nn.MultiheadAttention.
"""
import argparse
import array
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn


# ---- chapter 3's classes, as the book defines them ----------------------------------------

class SelfAttention_v1(nn.Module):

    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key   = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        keys = x @ self.W_key
        queries = x @ self.W_query
        values = x @ self.W_value

        attn_scores = queries @ keys.T # omega
        attn_weights = torch.softmax(
            attn_scores / keys.shape[-1]**0.5, dim=-1
        )

        context_vec = attn_weights @ values
        return context_vec


class SelfAttention_v2(nn.Module):

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key   = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)

        attn_scores = queries @ keys.T
        attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)

        context_vec = attn_weights @ values
        return context_vec


class CausalAttention(nn.Module):

    def __init__(self, d_in, d_out, context_length,
                 dropout, qkv_bias=False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key   = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout) # New
        self.register_buffer('mask', torch.triu(torch.ones(context_length, context_length), diagonal=1)) # New

    def forward(self, x):
        b, num_tokens, d_in = x.shape # New batch dimension b
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)

        attn_scores = queries @ keys.transpose(1, 2) # Changed transpose
        attn_scores.masked_fill_(  # New, _ ops are in-place
            self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)  # `:num_tokens` to account for cases where the number of tokens in the batch is smaller than the supported context_size
        attn_weights = torch.softmax(
            attn_scores / keys.shape[-1]**0.5, dim=-1
        )
        attn_weights = self.dropout(attn_weights) # New

        context_vec = attn_weights @ values
        return context_vec


class MultiHeadAttentionWrapper(nn.Module):

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
             for _ in range(num_heads)]
        )

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert (d_out % num_heads == 0), \
            "d_out must be divisible by num_heads"

        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads # Reduce the projection dim to match desired output dim

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # Linear layer to combine head outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask",
            torch.triu(torch.ones(context_length, context_length),
                       diagonal=1)
        )

    def forward(self, x):
        b, num_tokens, d_in = x.shape

        keys = self.W_key(x) # Shape: (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        # We implicitly split the matrix by adding a `num_heads` dimension
        # Unroll last dim: (b, num_tokens, d_out) -> (b, num_tokens, num_heads, head_dim)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)

        # Transpose: (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
        keys = keys.transpose(1, 2)
        queries = queries.transpose(1, 2)
        values = values.transpose(1, 2)

        # Compute scaled dot-product attention (aka self-attention) with a causal mask
        attn_scores = queries @ keys.transpose(2, 3)  # Dot product for each head

        # Original mask truncated to the number of tokens and converted to boolean
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]

        # Use the mask to fill attention scores
        attn_scores.masked_fill_(mask_bool, -torch.inf)

        attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)

        # Shape: (b, num_tokens, num_heads, head_dim)
        context_vec = (attn_weights @ values).transpose(1, 2)

        # Combine heads, where self.d_out = self.num_heads * self.head_dim
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        context_vec = self.out_proj(context_vec) # optional projection

        return context_vec


# ---- a tiny GPT-2 written by hand (no transformers package) --------------------------------

class Conv1D(nn.Module):
    """GPT-2's Conv1D: a linear layer with the weight stored [in, out]: y = x W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) / math.sqrt(nx))
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    """Hugging Face's GPT2Attention (self-attention path): c_attn, causal mask `bias`, c_proj."""

    def __init__(self, n_embd, n_head, n_ctx):
        super().__init__()
        self.n_head = n_head
        self.split_size = n_embd
        self.c_attn = Conv1D(3 * n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)
        self.register_buffer("bias", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)).view(1, 1, n_ctx, n_ctx))
        self.register_buffer("masked_bias", torch.tensor(-1e4))

    def _split_heads(self, t):
        b, n, d = t.shape
        return t.view(b, n, self.n_head, d // self.n_head).permute(0, 2, 1, 3)

    def forward(self, x):
        query, key, value = self.c_attn(x).split(self.split_size, dim=2)
        query, key, value = (self._split_heads(t) for t in (query, key, value))
        w = torch.matmul(query, key.transpose(-1, -2)) / (value.size(-1) ** 0.5)
        n = query.size(-2)
        causal = self.bias[:, :, :n, :n]
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        a = torch.matmul(nn.functional.softmax(w, dim=-1), value)
        b, h, n, hd = a.shape
        return self.c_proj(a.permute(0, 2, 1, 3).contiguous().view(b, n, h * hd))


class GPT2Block(nn.Module):
    def __init__(self, n_embd, n_head, n_ctx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)  # not exported to attn; makes the file look like GPT-2's
        self.attn = GPT2Attention(n_embd, n_head, n_ctx)


class TinyGPT2(nn.Module):
    """GPT-2's tensor names (h.{i}.attn.c_attn.weight ...) for n_layer blocks."""

    def __init__(self, n_embd, n_head, n_ctx, n_layer):
        super().__init__()
        self.h = nn.ModuleList([GPT2Block(n_embd, n_head, n_ctx) for _ in range(n_layer)])


# ---- Hugging Face Llama (also Mistral, Qwen2) and GPT-NeoX attention ------------------------
# Written as transformers 4.36 writes them (modeling_llama.py, modeling_gpt_neox.py), trimmed
# to the self-attention path without a cache; no transformers package needed.

class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
        super().__init__()

        self.dim = dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2).float().to(device) / self.dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

        # Build here to make `torch.jit.trace` work.
        self._set_cos_sin_cache(
            seq_len=max_position_embeddings, device=self.inv_freq.device, dtype=torch.get_default_dtype()
        )

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        t = torch.arange(self.max_seq_len_cached, device=device, dtype=self.inv_freq.dtype)

        freqs = torch.outer(t, self.inv_freq)
        # Different from paper, but it uses a different permutation in order to obtain the same calculation
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)

    def forward(self, x, seq_len=None):
        # x: [bs, num_attention_heads, seq_len, head_size]
        if seq_len > self.max_seq_len_cached:
            self._set_cos_sin_cache(seq_len=seq_len, device=x.device, dtype=x.dtype)

        return (
            self.cos_cached[:seq_len].to(dtype=x.dtype),
            self.sin_cached[:seq_len].to(dtype=x.dtype),
        )


def rotate_half(x):
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors."""
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """
    This is the equivalent of torch.repeat_interleave(x, dim=1, repeats=n_rep). The hidden states go from (batch,
    num_key_value_heads, seqlen, head_dim) to (batch, num_attention_heads, seqlen, head_dim)
    """
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def causal_attention_mask(bsz, q_len, dtype, sliding_window=None):
    """The 4D additive mask of _prepare_4d_causal_attention_mask (Mistral's sliding window:
    position i sees j when i - sliding_window < j <= i)."""
    mask = torch.full((q_len, q_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(q_len)
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(q_len, 1), 0)
    if sliding_window is not None:
        context_mask = torch.tril(torch.ones_like(mask, dtype=torch.bool), diagonal=-sliding_window)
        mask.masked_fill_(context_mask, torch.finfo(dtype).min)
    return mask[None, None, :, :].expand(bsz, 1, q_len, q_len).to(dtype)


class LlamaAttention(nn.Module):
    """Multi-headed attention from 'Attention Is All You Need' paper (Hugging Face's; Mistral and
    Qwen2 are this with a sliding window and q/k/v biases)."""

    def __init__(self, hidden_size, num_heads, num_key_value_heads, head_dim, rope_theta=10000.0,
                 max_position_embeddings=2048, attention_bias=False, qkv_bias=False, sliding_window=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.num_key_value_heads = num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.sliding_window = sliding_window

        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=attention_bias or qkv_bias)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=attention_bias or qkv_bias)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=attention_bias or qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=attention_bias)
        self.rotary_emb = LlamaRotaryEmbedding(
            self.head_dim, max_position_embeddings=self.max_position_embeddings, base=self.rope_theta)

    def forward(self, hidden_states):
        bsz, q_len, _ = hidden_states.size()
        position_ids = torch.arange(q_len, dtype=torch.long).unsqueeze(0)
        attention_mask = causal_attention_mask(bsz, q_len, hidden_states.dtype, self.sliding_window)

        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)

        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask

        # upcast attention to fp32
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.num_heads * self.head_dim)
        attn_output = self.o_proj(attn_output)
        return attn_output


class GPTNeoXRotaryEmbedding(LlamaRotaryEmbedding):
    """GPT-NeoX's copy of the Llama rotary embedding (dim = rotary_ndims)."""


class GPTNeoXAttention(nn.Module):
    def __init__(self, hidden_size, num_attention_heads, rotary_pct=0.25, rotary_emb_base=10000,
                 max_position_embeddings=2048, attention_bias=True):
        super().__init__()
        self.num_attention_heads = num_attention_heads
        self.hidden_size = hidden_size
        self.head_size = self.hidden_size // self.num_attention_heads
        self.rotary_ndims = int(self.head_size * rotary_pct)
        self.rotary_emb = GPTNeoXRotaryEmbedding(
            self.rotary_ndims, max_position_embeddings, base=rotary_emb_base)
        self.norm_factor = self.head_size ** -0.5
        self.query_key_value = nn.Linear(hidden_size, 3 * hidden_size, bias=attention_bias)
        self.dense = nn.Linear(hidden_size, hidden_size, bias=attention_bias)

    def forward(self, hidden_states):
        position_ids = torch.arange(hidden_states.shape[1], dtype=torch.long).unsqueeze(0)
        # Compute QKV
        # Attention heads [batch, seq_len, hidden_size]
        #   --> [batch, seq_len, (np * 3 * head_size)]
        qkv = self.query_key_value(hidden_states)

        # [batch, seq_len, (num_heads * 3 * head_size)]
        #   --> [batch, seq_len, num_heads, 3 * head_size]
        new_qkv_shape = qkv.size()[:-1] + (self.num_attention_heads, 3 * self.head_size)
        qkv = qkv.view(*new_qkv_shape)

        # [batch, seq_len, num_attention_heads, 3 * head_size] --> 3 [batch, num_attention_heads, seq_len, head_size]
        query = qkv[..., : self.head_size].permute(0, 2, 1, 3)
        key = qkv[..., self.head_size : 2 * self.head_size].permute(0, 2, 1, 3)
        value = qkv[..., 2 * self.head_size :].permute(0, 2, 1, 3)

        # Compute rotary embeddings on rotary_ndims
        query_rot = query[..., : self.rotary_ndims]
        query_pass = query[..., self.rotary_ndims :]
        key_rot = key[..., : self.rotary_ndims]
        key_pass = key[..., self.rotary_ndims :]

        seq_len = key.shape[-2]
        cos, sin = self.rotary_emb(value, seq_len=seq_len)
        query, key = apply_rotary_pos_emb(query_rot, key_rot, cos, sin, position_ids)
        query = torch.cat((query, query_pass), dim=-1)
        key = torch.cat((key, key_pass), dim=-1)

        attn_output = self._attn(query, key, value)
        attn_output = self._merge_heads(attn_output, self.num_attention_heads, self.head_size)
        return self.dense(attn_output)

    @classmethod
    def _merge_heads(cls, tensor, num_attention_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        return tensor.view(tensor.size(0), tensor.size(1), num_attention_heads * attn_head_size)

    def _attn(self, query, key, value):
        batch_size, num_attention_heads, query_length, attn_head_size = query.size()
        key_length = key.size(-2)
        causal_mask = torch.tril(torch.ones((key_length, key_length), dtype=torch.bool))
        causal_mask = causal_mask.view(1, 1, key_length, key_length)[:, :, key_length - query_length : key_length, :key_length]

        query = query.reshape(batch_size * num_attention_heads, query_length, attn_head_size)
        key = key.reshape(batch_size * num_attention_heads, key_length, attn_head_size)
        attn_scores = torch.zeros(
            batch_size * num_attention_heads, query_length, key_length, dtype=query.dtype, device=key.device)
        attn_scores = torch.baddbmm(attn_scores, query, key.transpose(1, 2), beta=1.0, alpha=self.norm_factor)
        attn_scores = attn_scores.view(batch_size, num_attention_heads, query_length, key_length)

        mask_value = torch.finfo(attn_scores.dtype).min
        mask_value = torch.tensor(mask_value, dtype=attn_scores.dtype).to(attn_scores.device)
        attn_scores = torch.where(causal_mask, attn_scores, mask_value)

        attn_weights = nn.functional.softmax(attn_scores, dim=-1)
        attn_weights = attn_weights.to(value.dtype)
        return torch.matmul(attn_weights, value)


def build_alibi_tensor(attention_mask, num_heads, dtype):
    """BLOOM's ALiBi (modeling_bloom.py): slopes by the paper's geometric rule, with its rule for
    head counts that are not powers of two, times each key's position."""
    batch_size, seq_length = attention_mask.shape
    closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest_power_of_2) - 3))), dtype=torch.float32)
    powers = torch.arange(1, 1 + closest_power_of_2, dtype=torch.int32)
    slopes = torch.pow(base, powers)
    if closest_power_of_2 != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest_power_of_2) - 3))), dtype=torch.float32)
        num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
        extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
    arange_tensor = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
    alibi = slopes[..., None] * arange_tensor
    return alibi.reshape(batch_size * num_heads, 1, seq_length).to(dtype)


class BloomAttention(nn.Module):
    """BLOOM's attention (transformers 4.36 modeling_bloom.py, without dropout and the residual
    add): fused query_key_value stored per head as [q_h, k_h, v_h], ALiBi added by baddbmm."""

    def __init__(self, hidden_size, n_head):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = n_head
        self.head_dim = self.hidden_size // self.num_heads
        self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        self.beta = 1.0
        self.query_key_value = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=True)
        self.dense = nn.Linear(self.hidden_size, self.hidden_size)

    def _split_heads(self, fused_qkv):
        batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
        fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
        return fused_qkv[..., 0, :], fused_qkv[..., 1, :], fused_qkv[..., 2, :]

    def _merge_heads(self, x):
        batch_size_and_num_heads, seq_length, _ = x.shape
        batch_size = batch_size_and_num_heads // self.num_heads
        x = x.view(batch_size, self.num_heads, seq_length, self.head_dim)
        x = x.permute(0, 2, 1, 3)
        return x.reshape(batch_size, seq_length, self.num_heads * self.head_dim)

    def forward(self, hidden_states):
        batch_size, q_length, _ = hidden_states.shape
        alibi = build_alibi_tensor(torch.ones(batch_size, q_length), self.num_heads, hidden_states.dtype)
        # BLOOM's _prepare_attn_mask: True where a key is in the future.
        attention_mask = torch.triu(torch.ones(q_length, q_length, dtype=torch.bool), diagonal=1)[None, None]
        fused_qkv = self.query_key_value(hidden_states)
        (query_layer, key_layer, value_layer) = self._split_heads(fused_qkv)
        query_layer = query_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        key_layer = key_layer.permute(0, 2, 3, 1).reshape(batch_size * self.num_heads, self.head_dim, q_length)
        value_layer = value_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
        kv_length = key_layer.shape[-1]
        matmul_result = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta,
                                      alpha=self.inv_norm_factor)
        attention_scores = matmul_result.view(batch_size, self.num_heads, q_length, kv_length)
        attn_weights = torch.masked_fill(attention_scores, attention_mask,
                                         torch.finfo(attention_scores.dtype).min)
        attention_probs = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(hidden_states.dtype)
        attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, kv_length)
        context_layer = torch.bmm(attention_probs_reshaped, value_layer)
        context_layer = self._merge_heads(context_layer)
        return self.dense(context_layer)


class Gemma2Attention(LlamaAttention):
    """Gemma 2's attention (transformers 4.42 modeling_gemma2.py): the Llama attention with
    scaling = query_pre_attn_scalar ** -0.5 and attn_logit_softcapping applied to the scaled
    scores before the mask."""

    def __init__(self, hidden_size, num_heads, num_key_value_heads, head_dim, query_pre_attn_scalar,
                 attn_logit_softcapping, rope_theta=10000.0):
        super().__init__(hidden_size, num_heads, num_key_value_heads, head_dim, rope_theta=rope_theta)
        self.scaling = query_pre_attn_scalar ** -0.5
        self.attn_logit_softcapping = attn_logit_softcapping

    def forward(self, hidden_states):
        bsz, q_len, _ = hidden_states.size()
        position_ids = torch.arange(q_len, dtype=torch.long).unsqueeze(0)
        causal_mask = causal_attention_mask(bsz, q_len, hidden_states.dtype)
        query_states = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads,
                                                     self.head_dim).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads,
                                                       self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(value_states, seq_len=q_len)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        if self.attn_logit_softcapping is not None:
            attn_weights = attn_weights / self.attn_logit_softcapping
            attn_weights = torch.tanh(attn_weights)
            attn_weights = attn_weights * self.attn_logit_softcapping
        attn_weights = attn_weights + causal_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous().view(bsz, q_len, -1)
        return self.o_proj(attn_output)


def hf_metadata(module, layout_meta=True):
    """Returns the __metadata__ of a Hugging Face layer: every key attn reads, so that the
    file runs without flags (the fixtures drop some to test what the shapes imply)."""
    meta = {"format": "pt", "producer": "attn tools/export_torch.py", "torch_version": torch.__version__,
            "module": type(module).__name__, "causal": "true", "rope": "neox"}
    if isinstance(module, BloomAttention):
        meta.update(layout="gpt-neox", num_heads=module.num_heads, rope="none", alibi="true")
        return meta
    if isinstance(module, Gemma2Attention):
        meta.update(scale=repr(float(module.scaling)), softcap=repr(float(module.attn_logit_softcapping)))
    if isinstance(module, LlamaAttention):
        meta.update(layout="hf-llama", num_heads=module.num_heads, num_kv_heads=module.num_key_value_heads,
                    head_dim=module.head_dim, rope_theta=repr(float(module.rope_theta)))
        if module.sliding_window is not None:
            meta["window"] = module.sliding_window
    else:
        meta.update(layout="gpt-neox", num_heads=module.num_attention_heads,
                    rope_theta=repr(float(module.rotary_emb.base)), rope_dim=module.rotary_ndims)
    return meta


def export_hf(module, path, prefix, x, drop_keys=(), perturb_bias=True):
    """Writes path.safetensors (the state dict under `prefix`, e.g. model.layers.0.self_attn.),
    path.input.npy and path.output.npy (PyTorch's output in eval mode)."""
    module.eval()
    if perturb_bias:  # nn.Linear biases start near zero; larger ones show they are applied
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.normal_(std=0.5)
    meta = {k: v for k, v in hf_metadata(module).items() if k not in drop_keys}
    tensors = {prefix + k: v for k, v in module.state_dict().items()}
    write_safetensors(path + ".safetensors", tensors, meta)
    with torch.no_grad():
        y = module(x)
    write_npy(path + ".input.npy", x)
    write_npy(path + ".output.npy", y)


# ---- file formats, written by hand ---------------------------------------------------------

def _le_bytes(typecode, values):
    a = array.array(typecode, values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def _tensor_bytes(t, dtype):
    """Returns (safetensors dtype, little-endian bytes) of tensor t stored as dtype."""
    t = t.detach().contiguous().flatten()
    if t.dtype == torch.bool:
        return "BOOL", bytes(int(v) for v in t.tolist())
    if dtype == "F32" or t.dim() == 0:
        return "F32", _le_bytes("f", t.float().tolist())
    if dtype == "F16":
        return "F16", struct.pack("<%de" % t.numel(), *t.half().float().tolist())
    if dtype == "BF16":
        f32 = _le_bytes("f", t.bfloat16().float().tolist())
        return "BF16", b"".join(f32[i + 2:i + 4] for i in range(0, len(f32), 4))
    raise ValueError("dtype must be F32, F16 or BF16, not %r" % dtype)


def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """Writes {name: tensor} to path; floating tensors as dtype, bool tensors as BOOL."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        st_dtype, data = _tensor_bytes(t, dtype if t.dim() > 0 else "F32")
        header[name] = {"dtype": st_dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_npy(path, t):
    """Writes tensor t as a version 1.0 .npy file of '<f4' in C order."""
    t = t.detach().float().contiguous()
    shape = tuple(t.shape)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (repr(shape),)
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00")
        f.write(struct.pack("<H", len(header)))
        f.write(header.encode("latin1"))
        f.write(_le_bytes("f", t.flatten().tolist()))


# ---- modules -> attn files -----------------------------------------------------------------

LAYOUTS = {
    SelfAttention_v1: "v1", SelfAttention_v2: "v2", CausalAttention: "causal",
    MultiHeadAttentionWrapper: "wrapper", MultiHeadAttention: "mha", nn.MultiheadAttention: "torch-mha",
    GPT2Attention: "gpt2", TinyGPT2: "gpt2",
}


def _round_to(module, dtype):
    """Rounds floating parameters to dtype (kept in float32) so that PyTorch's output is what the
    stored weights give."""
    with torch.no_grad():
        for p in module.parameters():
            if dtype == "F16":
                p.copy_(p.half().float())
            elif dtype == "BF16":
                p.copy_(p.bfloat16().float())


def run(module, x, causal=True, layer=0):
    """Returns module(x) in eval mode; x is [seq_len, d_in] or [batch, seq_len, d_in]."""
    module.eval()
    with torch.no_grad():
        batched = x if x.dim() == 3 else x.unsqueeze(0)
        if isinstance(module, (SelfAttention_v1, SelfAttention_v2)):
            # The book's v1/v2 use keys.T, defined for one sequence: run them one by one.
            y = torch.stack([module(seq) for seq in batched])
        elif isinstance(module, nn.MultiheadAttention):
            n = batched.shape[1]
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1) if causal else None
            # Distinct (equal) key and value tensors keep PyTorch 1.13 off its fused fast path,
            # which fails for bias=False without a mask ("qkv_bias must be Tensor").
            y = module(batched, batched.clone(), batched.clone(), attn_mask=mask, need_weights=False)[0]
        elif isinstance(module, TinyGPT2):
            y = module.h[layer].attn(batched)
        else:
            y = module(batched)
    return y if x.dim() == 3 else y.squeeze(0)


def metadata_for(module, causal=True):
    """Returns the __metadata__ attn reads: layout, num_heads, context_length, causal."""
    meta = {"format": "pt", "producer": "attn tools/export_torch.py", "torch_version": torch.__version__,
            "module": type(module).__name__, "layout": LAYOUTS[type(module)]}
    if isinstance(module, (CausalAttention, MultiHeadAttentionWrapper, MultiHeadAttention)):
        mask = module.heads[0].mask if isinstance(module, MultiHeadAttentionWrapper) else module.mask
        meta["context_length"] = mask.shape[0]
    if isinstance(module, MultiHeadAttentionWrapper):
        meta["num_heads"] = len(module.heads)
    elif isinstance(module, MultiHeadAttention):
        meta["num_heads"] = module.num_heads
    elif isinstance(module, nn.MultiheadAttention):
        meta["num_heads"] = module.num_heads
    elif isinstance(module, TinyGPT2):
        meta["num_heads"] = module.h[0].attn.n_head
        meta["context_length"] = module.h[0].attn.bias.shape[-1]
    else:
        meta["num_heads"] = 1
    meta["causal"] = "false" if isinstance(module, (SelfAttention_v1, SelfAttention_v2)) else \
        ("true" if causal else "false")
    return meta


def export(module, prefix, x, causal=True, dtype="F32", layer=0, outputs=True):
    """Writes prefix.safetensors (module.state_dict(), floating tensors as dtype) and, when
    outputs, prefix.input.npy (x) and prefix.output.npy (module(x) in eval mode). For TinyGPT2
    the output is that of block `layer`'s attention."""
    _round_to(module, dtype)
    write_safetensors(prefix + ".safetensors", module.state_dict(), metadata_for(module, causal), dtype)
    if outputs:
        write_npy(prefix + ".input.npy", x)
        write_npy(prefix + ".output.npy", run(module, x, causal, layer))


def build(cls, d_in, d_out, heads, context_length, qkv_bias, layers=1):
    """Creates one of the supported modules; d_out is per head for the wrapper, as in the book."""
    if cls == "SelfAttention_v1":
        return SelfAttention_v1(d_in, d_out)
    if cls == "SelfAttention_v2":
        return SelfAttention_v2(d_in, d_out, qkv_bias)
    if cls == "CausalAttention":
        return CausalAttention(d_in, d_out, context_length, 0.0, qkv_bias)
    if cls == "MultiHeadAttentionWrapper":
        return MultiHeadAttentionWrapper(d_in, d_out, context_length, 0.0, heads, qkv_bias)
    if cls == "MultiHeadAttention":
        return MultiHeadAttention(d_in, d_out, context_length, 0.0, heads, qkv_bias)
    if cls == "nn.MultiheadAttention":
        m = nn.MultiheadAttention(d_in, heads, bias=qkv_bias, batch_first=True)
        if qkv_bias:  # PyTorch starts the biases at zero; random ones show they are applied
            with torch.no_grad():
                m.in_proj_bias.normal_(std=0.1)
                m.out_proj.bias.normal_(std=0.1)
        return m
    if cls == "gpt2":
        return TinyGPT2(d_in, heads, context_length, layers)
    raise ValueError("unknown class " + cls)


# ---- the golden fixtures of tests/ ---------------------------------------------------------

BOOK_INPUTS = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                            [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])

# name: (class, d_in, d_out, heads, context_length, qkv_bias, causal, batch, seq_len, dtype, seed)
# batch 0 means a rank-2 input [seq_len, d_in].
FIXTURES = {
    "v1_book": ("SelfAttention_v1", 3, 2, 1, 0, False, False, 0, 6, "F32", 123),
    "v1_b3": ("SelfAttention_v1", 5, 3, 1, 0, False, False, 3, 7, "F32", 1),
    "v2_bias_b3": ("SelfAttention_v2", 5, 4, 1, 0, True, False, 3, 7, "F32", 2),
    "causal_b3": ("CausalAttention", 7, 5, 1, 9, False, True, 3, 5, "F32", 3),
    "causal_bias_b1": ("CausalAttention", 4, 3, 1, 6, True, True, 1, 6, "F32", 4),
    "wrapper_bias_b3": ("MultiHeadAttentionWrapper", 6, 3, 3, 8, True, True, 3, 8, "F32", 5),
    "wrapper_b1": ("MultiHeadAttentionWrapper", 3, 1, 2, 6, False, True, 0, 6, "F32", 6),
    "mha_b3": ("MultiHeadAttention", 7, 6, 3, 12, False, True, 3, 11, "F32", 7),
    "mha_bias_b1": ("MultiHeadAttention", 5, 8, 4, 9, True, True, 1, 9, "F32", 8),
    "torch_mha_causal_b3": ("nn.MultiheadAttention", 8, 8, 2, 0, True, True, 3, 7, "F32", 9),
    "torch_mha_b1": ("nn.MultiheadAttention", 6, 6, 3, 0, False, False, 1, 5, "F32", 10),
    "mha_f16": ("MultiHeadAttention", 6, 6, 2, 8, True, True, 1, 7, "F16", 11),
    "causal_bf16": ("CausalAttention", 5, 3, 1, 7, True, True, 3, 4, "BF16", 12),
}


def write_fixtures(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, (cls, d_in, d_out, heads, ctx, bias, causal, batch, seq, dtype, seed) in FIXTURES.items():
        torch.manual_seed(seed)
        module = build(cls, d_in, d_out, heads, ctx, bias)
        if name == "v1_book":
            x = BOOK_INPUTS
        else:
            x = torch.randn(batch, seq, d_in) if batch else torch.randn(seq, d_in)
        export(module, os.path.join(out_dir, name), x, causal, dtype)

    # GPT-2: two blocks in one file (choose one with --prefix), outputs of both.
    torch.manual_seed(13)
    gpt2 = build("gpt2", 12, 12, 3, 16, True, layers=2)
    x = torch.randn(3, 10, 12)
    export(gpt2, os.path.join(out_dir, "gpt2_2layers"), x, outputs=False)
    write_npy(os.path.join(out_dir, "gpt2_2layers.input.npy"), x)
    for i in range(2):
        write_npy(os.path.join(out_dir, "gpt2_2layers.h%d.output.npy" % i), run(gpt2, x, layer=i))

    write_hf_fixtures(out_dir)

    # A few corrupt files for the command-line tests (the C++ tests make many more).
    corrupt = os.path.join(out_dir, "corrupt")
    os.makedirs(corrupt, exist_ok=True)
    with open(os.path.join(out_dir, "causal_b3.safetensors"), "rb") as f:
        good = f.read()
    files = {
        "truncated.safetensors": good[:len(good) - 7],
        "huge_header.safetensors": struct.pack("<Q", 1 << 60) + good[8:],
        "bad_json.safetensors": struct.pack("<Q", 8) + b'{"a":[1,',
        "overlap.safetensors": _raw_safetensors(
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12),
        "f64.npy": _raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16),
    }
    for fname, data in files.items():
        with open(os.path.join(corrupt, fname), "wb") as f:
            f.write(data)


def write_hf_fixtures(out_dir):
    """Hugging Face Llama / Qwen2 / Mistral and GPT-NeoX attention, as their projects write them."""
    torch.manual_seed(14)
    # GQA, head_dim 6 with num_heads * head_dim (24) != d (16); head_dim and num_kv_heads left
    # for the loader to infer from the shapes.
    m = LlamaAttention(16, 4, 2, 6, rope_theta=10000.0)
    export_hf(m, os.path.join(out_dir, "hf_llama_gqa"), "model.layers.0.self_attn.", torch.randn(2, 9, 16),
              drop_keys=("num_kv_heads", "head_dim"))
    # Qwen2: q/k/v biases, o_proj without; theta 1e6; two kv heads for six query heads.
    torch.manual_seed(15)
    m = LlamaAttention(12, 6, 2, 4, rope_theta=1000000.0, qkv_bias=True)
    export_hf(m, os.path.join(out_dir, "hf_qwen2_bias"), "model.layers.3.self_attn.", torch.randn(3, 7, 12))
    # Mistral: sliding window 4 over 11 tokens, multi-query.
    torch.manual_seed(16)
    m = LlamaAttention(8, 4, 1, 4, rope_theta=10000.0, sliding_window=4)
    export_hf(m, os.path.join(out_dir, "hf_mistral_window"), "", torch.randn(1, 11, 8))
    # Positions past 1000: multi-query, tiny dims, 1030 tokens.
    torch.manual_seed(17)
    m = LlamaAttention(2, 2, 1, 4, rope_theta=10000.0)
    export_hf(m, os.path.join(out_dir, "hf_llama_long"), "model.layers.0.self_attn.", torch.randn(1, 1030, 2))
    # GPT-NeoX with partial rotary (rotary_pct 0.5: 4 of 8 features per head rotate).
    torch.manual_seed(18)
    m = GPTNeoXAttention(16, 2, rotary_pct=0.5, rotary_emb_base=10000)
    export_hf(m, os.path.join(out_dir, "gpt_neox_partial"), "gpt_neox.layers.0.attention.", torch.randn(2, 6, 16))
    # BLOOM: ALiBi over 6 heads (not a power of two: slopes of 4 heads, then 2 from the next
    # power's odd powers), fused per-head query_key_value; scores scaled up so the biases matter.
    torch.manual_seed(19)
    m = BloomAttention(18, 6)
    with torch.no_grad():
        m.query_key_value.weight.mul_(4.0)
    export_hf(m, os.path.join(out_dir, "bloom_alibi"), "transformer.h.0.self_attention.", torch.randn(2, 13, 18))
    # Gemma 2: GQA, head_dim 10 with num_heads * head_dim != d, scale from query_pre_attn_scalar,
    # soft-capping at 2 (scores scaled up so the cap bends them).
    torch.manual_seed(20)
    m = Gemma2Attention(12, 4, 2, 10, query_pre_attn_scalar=7, attn_logit_softcapping=2.0)
    with torch.no_grad():
        m.q_proj.weight.mul_(3.0)
        m.k_proj.weight.mul_(3.0)
    export_hf(m, os.path.join(out_dir, "gemma2_softcap"), "model.layers.0.self_attn.", torch.randn(2, 10, 12))


def _raw_safetensors(header, data_bytes):
    return struct.pack("<Q", len(header)) + header + bytes(data_bytes)


def _raw_npy(header, data_bytes):
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(data_bytes)


# ---- command line --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model", help="export one module with a random input and PyTorch's output")
    m.add_argument("--class", dest="cls", required=True,
                   choices=["SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper",
                            "MultiHeadAttention", "nn.MultiheadAttention", "gpt2"])
    m.add_argument("--d-in", type=int, required=True)
    m.add_argument("--d-out", type=int, help="output width (per head for the wrapper, as in the book); "
                                            "default d_in")
    m.add_argument("--heads", type=int, default=1)
    m.add_argument("--context-length", type=int, default=1024)
    m.add_argument("--qkv-bias", action="store_true")
    m.add_argument("--no-causal", action="store_true", help="nn.MultiheadAttention without the causal mask")
    m.add_argument("--layers", type=int, default=1, help="gpt2: number of blocks h.{i}")
    m.add_argument("--layer", type=int, default=0, help="gpt2: the block whose output is written")
    m.add_argument("--state-dict", help="load these weights (torch.save(module.state_dict(), path))")
    m.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    m.add_argument("--batch", type=int, default=1, help="0: a rank-2 input [seq_len, d_in]")
    m.add_argument("--seq-len", type=int, default=8)
    m.add_argument("--seed", type=int, default=123)
    m.add_argument("--out", required=True, help="writes OUT.safetensors, OUT.input.npy, OUT.output.npy")
    f = sub.add_parser("fixtures", help="write the golden test fixtures")
    f.add_argument("--out-dir", required=True)
    f.add_argument("--only-hf", action="store_true", help="only the Hugging Face / GPT-NeoX fixtures")
    args = p.parse_args(argv)

    if args.command == "fixtures":
        if args.only_hf:
            os.makedirs(args.out_dir, exist_ok=True)
            write_hf_fixtures(args.out_dir)
        else:
            write_fixtures(args.out_dir)
        return 0
    torch.manual_seed(args.seed)
    module = build(args.cls, args.d_in, args.d_out or args.d_in, args.heads, args.context_length, args.qkv_bias,
                   args.layers)
    if args.state_dict:
        module.load_state_dict(torch.load(args.state_dict, map_location="cpu"))
    shape = (args.batch, args.seq_len, args.d_in) if args.batch else (args.seq_len, args.d_in)
    export(module, args.out, torch.randn(*shape), not args.no_causal, args.dtype, args.layer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
