"""attn's classes against the book's PyTorch classes: the same seed gives the same weights,
the same state dict gives the same outputs (numpy and torch inputs)."""
import numpy as np
import pytest
import torch

import attn
import chapter
from conftest import BOOK_X, assert_close

torch.set_grad_enabled(False)


def torch_pair(name, args, seed, **kw):
    """Returns (book module, attn layer) built after manual_seed(seed) / with seed=seed."""
    torch.manual_seed(seed)
    ref = getattr(chapter, name)(*args).eval()
    ours = getattr(attn, name)(*args, seed=seed, **kw)
    return ref, ours


def random_input(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = [
    # (class, constructor args, input shape); v1/v2 are 2-D only (the book uses keys.T)
    ("SelfAttention_v1", (3, 2), (6, 3)),
    ("SelfAttention_v1", (16, 24), (37, 16)),
    ("SelfAttention_v2", (3, 2), (6, 3)),
    ("SelfAttention_v2", (20, 12, True), (33, 20)),
    ("CausalAttention", (3, 2, 6, 0.0), (2, 6, 3)),
    ("CausalAttention", (24, 16, 64, 0.1, True), (3, 50, 24)),
    ("MultiHeadAttentionWrapper", (3, 2, 6, 0.0, 2), (2, 6, 3)),
    ("MultiHeadAttentionWrapper", (3, 1, 6, 0.0, 2), (2, 6, 3)),
    ("MultiHeadAttentionWrapper", (32, 8, 40, 0.0, 3, True), (2, 40, 32)),
    ("MultiHeadAttention", (3, 2, 6, 0.0, 2), (2, 6, 3)),
    ("MultiHeadAttention", (64, 48, 128, 0.0, 4, True), (3, 100, 64)),
    ("MultiHeadAttention", (768, 768, 256, 0.1, 12, True), (2, 65, 768)),
]


@pytest.mark.parametrize("name,args,shape", CASES)
def test_same_seed_same_weights(name, args, shape):
    ref, ours = torch_pair(name, args, seed=123)
    want = ref.state_dict()
    got = ours.state_dict()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k].numpy(), err_msg=k)


@pytest.mark.parametrize("name,args,shape", CASES)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_outputs_match_pytorch_with_loaded_state_dict(name, args, shape, kind):
    torch.manual_seed(7)
    ref = getattr(chapter, name)(*args).eval()
    ours = getattr(attn, name)(*args, seed=1)  # other weights, then replaced
    sd = ref.state_dict()
    ours.load_state_dict(sd if kind == "torch" else {k: v.numpy() for k, v in sd.items()})
    x = random_input(shape, seed=len(shape) * 31 + shape[-1])
    want = ref(torch.from_numpy(x)).numpy()
    got = ours(torch.from_numpy(x) if kind == "torch" else x)
    assert isinstance(got, torch.Tensor if kind == "torch" else np.ndarray)
    assert got.dtype in (np.float32, torch.float32)
    assert_close(np.asarray(got), want)


def test_book_numbers():
    batch = np.stack([BOOK_X, BOOK_X])
    mha = attn.MultiHeadAttention(3, 2, 6, 0.0, 2, seed=123)
    assert_close(mha(batch)[1], [[0.3190, 0.4858], [0.2943, 0.3897], [0.2856, 0.3593],
                                 [0.2693, 0.3873], [0.2639, 0.3928], [0.2575, 0.4028]],
                 atol=5e-5, rtol=0)
    ca = attn.CausalAttention(3, 2, 6, 0.0, seed=123)
    assert_close(ca(batch)[0], [[-0.4519, 0.2216], [-0.5874, 0.0058], [-0.6300, -0.0632],
                                [-0.5675, -0.0843], [-0.5526, -0.0981], [-0.5299, -0.1081]],
                 atol=5e-5, rtol=0)
    v2 = attn.SelfAttention_v2(3, 2, seed=789)
    assert_close(v2(BOOK_X)[0], [-0.0739, 0.0713], atol=5e-5, rtol=0)
    w = attn.MultiHeadAttentionWrapper(3, 2, 6, 0.0, 2, seed=123)
    assert w(batch).shape == (2, 6, 4)  # the chapter's d_out is per head


def test_positional_signatures_and_keywords():
    layer = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, False, threads=1, backend="serial",
                                    isa="auto", seed=3)
    assert (layer.d_in, layer.d_out, layer.num_heads, layer.context_length) == (8, 8, 2, 16)
    assert layer.causal and not layer.qkv_bias and layer.threads == 1
    assert isinstance(layer, attn.Layer)
    assert attn.CausalAttention(4, 4, context_length=8, dropout=0.5, qkv_bias=True).qkv_bias
    with pytest.raises(TypeError):  # engine options are keyword-only
        attn.SelfAttention_v1(3, 2, 1)


def test_torch_multihead_attention_state_dict():
    torch.manual_seed(5)
    d, heads, n = 48, 6, 20
    ref = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    ours = attn.MultiHeadAttention(d, d, 32, 0.0, heads, qkv_bias=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.from_numpy(random_input((2, n, d), 11))
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    want, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
    assert_close(ours(x).numpy(), want.numpy())


def test_gpt2_state_dict():
    """GPT-2's Conv1D names: c_attn.weight [d, 3d] (y = x W + b), c_proj.*, the bool mask."""
    torch.manual_seed(9)
    d, heads, ctx = 32, 4, 16
    ref = chapter.MultiHeadAttention(d, d, ctx, 0.0, heads, qkv_bias=True).eval()
    s = ref.state_dict()
    sd = {
        "attn.c_attn.weight": torch.cat([s["W_query.weight"], s["W_key.weight"],
                                         s["W_value.weight"]]).T.contiguous(),
        "attn.c_attn.bias": torch.cat([s["W_query.bias"], s["W_key.bias"], s["W_value.bias"]]),
        "attn.c_proj.weight": s["out_proj.weight"].T.contiguous(),
        "attn.c_proj.bias": s["out_proj.bias"],
        "attn.bias": torch.tril(torch.ones(ctx, ctx, dtype=torch.bool)).view(1, 1, ctx, ctx),
    }
    ours = attn.MultiHeadAttention(d, d, ctx, 0.0, heads, qkv_bias=True)
    ours.load_state_dict(sd)
    x = random_input((3, ctx, d), 4)
    assert_close(ours(x), ref(torch.from_numpy(x)).numpy())


def test_state_dict_round_trip_into_pytorch():
    ours = attn.MultiHeadAttentionWrapper(6, 3, 10, 0.0, 2, qkv_bias=True, seed=42)
    ref = chapter.MultiHeadAttentionWrapper(6, 3, 10, 0.0, 2, qkv_bias=True).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = random_input((2, 10, 6), 3)
    assert_close(ours(x), ref(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("name,prefix,expected", [
    ("mha_b3", None, "mha_b3.output.npy"),
    ("causal_b3", None, "causal_b3.output.npy"),
    ("wrapper_bias_b3", None, "wrapper_bias_b3.output.npy"),
    ("torch_mha_causal_b3", None, "torch_mha_causal_b3.output.npy"),
    ("gpt2_2layers", "h.1", "gpt2_2layers.h1.output.npy"),
])
def test_load_safetensors(data_dir, name, prefix, expected):
    import os
    layer = attn.load(os.path.join(data_dir, name + ".safetensors"), prefix,
                      context_length=None if name in ("mha_b3", "gpt2_2layers") else 64)
    x_name = "gpt2_2layers.input.npy" if "gpt2" in name else name + ".input.npy"
    x = np.load(os.path.join(data_dir, x_name))
    assert_close(layer(x), np.load(os.path.join(data_dir, expected)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,prefix,settings", [
    ("hf_llama_gqa", "model.layers.0.self_attn", dict(num_kv_heads=2, rope="neox")),
    ("hf_mistral_window", None, dict(num_kv_heads=1, window=4)),
    ("gpt_neox_partial", "gpt_neox.layers.0.attention", dict(rope_dim=4)),
    ("bloom_alibi", "transformer.h.0.self_attention", dict(alibi=True, rope="none")),
    ("gemma2_softcap", None, dict(softcap=2.0, num_kv_heads=2, head_dim=10)),
])
def test_load_served_layers_match_pytorch(data_dir, name, prefix, settings):
    """Hugging Face / GPT-NeoX / BLOOM / Gemma 2 layers (fixtures from the projects' own code):
    the settings come from the file, forward and a session match PyTorch's output."""
    import os
    layer = attn.load(os.path.join(data_dir, name + ".safetensors"), prefix, context_length=64)
    for key, value in settings.items():
        assert getattr(layer, key) == value, key
    assert "num_kv_heads" not in repr(layer) or layer.num_kv_heads != layer.num_heads
    x = np.load(os.path.join(data_dir, name + ".input.npy"))
    want = np.load(os.path.join(data_dir, name + ".output.npy"))
    assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    s = layer.new_session()
    got = np.concatenate([s.prefill(x[0, :3])] + [s.step(x[0, t]) [None] for t in range(3, x.shape[1])])
    assert_close(got, want[0], atol=1e-5, rtol=1e-5)


def test_load_settings_override_the_file(data_dir):
    import os
    path = os.path.join(data_dir, "gemma2_softcap.safetensors")
    x = np.load(os.path.join(data_dir, "gemma2_softcap.input.npy"))
    want = np.load(os.path.join(data_dir, "gemma2_softcap.output.npy"))
    layer = attn.load(path, context_length=64, softcap=50.0)
    assert layer.softcap == 50.0 and "softcap=50.0" in repr(layer)
    assert np.abs(layer(x) - want).max() > 1e-3  # the cap of 2 bends these scores
    assert attn.load(path, context_length=64, rope="gptj").rope == "gptj"
    with pytest.raises(ValueError, match="rope='rotary': expected none, neox or gptj"):
        attn.load(path, context_length=64, rope="rotary")
    with pytest.raises(ValueError, match=r"softcap=0.0: expected a finite number > 0"):
        attn.load(path, context_length=64, softcap=0.0)
    with pytest.raises(ValueError, match="alibi and rope = neox"):
        attn.load(path, context_length=64, alibi=True)
    with pytest.raises(ValueError, match="num_kv_heads = 3"):
        attn.load(path, context_length=64, num_kv_heads=3)
