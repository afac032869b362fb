"""Sessions (prefill + steps == forward) and errors (ValueError / MemoryError / OSError with the
engine's message)."""
import numpy as np
import pytest
import torch

import attn
from conftest import assert_close


def x_of(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name,args", [
    ("CausalAttention", (12, 8, 24, 0.0)),
    ("MultiHeadAttentionWrapper", (12, 4, 24, 0.0, 3, True)),
    ("MultiHeadAttention", (12, 12, 24, 0.0, 3, True)),
])
def test_prefill_and_steps_equal_forward(name, args):
    layer = getattr(attn, name)(*args, seed=4)
    x = x_of((24, 12), 4)
    want = layer(x)
    s = layer.new_session()
    assert s.position == 0 and s.capacity == 24
    out = [s.prefill(x[:9])]
    assert s.position == 9
    for t in range(9, 23):
        out.append(s.step(x[t:t + 1]))
    out.append(s.step(x[23])[None])  # a rank-1 token gives a rank-1 output
    assert s.position == 24
    assert_close(np.concatenate(out), want)
    with pytest.raises(ValueError, match="context_length|full|exceeds"):
        s.step(x[:1])
    assert s.position == 24
    s.reset()
    assert s.position == 0
    assert_close(s.prefill(torch.from_numpy(x[:3])).numpy(), want[:3])


def test_session_shape_errors():
    layer = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, seed=1)
    s = layer.new_session()
    with pytest.raises(ValueError, match="one token"):
        s.step(x_of((2, 8)))
    with pytest.raises(ValueError, match="tokens, d_in"):
        s.prefill(x_of((1, 2, 8)))
    with pytest.raises(ValueError):
        s.prefill(x_of((17, 8)))
    assert s.position == 0


def test_non_causal_layers_have_no_sessions():
    with pytest.raises(ValueError, match="causal"):
        attn.SelfAttention_v2(4, 4, seed=1).new_session()


def test_errors_carry_the_engine_message():
    layer = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, seed=1)
    with pytest.raises(ValueError, match="context_length = 16"):
        layer(x_of((1, 17, 8)))
    with pytest.raises(ValueError, match="divisible|num_heads"):
        attn.MultiHeadAttention(8, 10, 16, 0.0, 3)
    with pytest.raises(ValueError, match="backend"):
        attn.MultiHeadAttention(8, 8, 16, 0.0, 2, backend="cuda")
    with pytest.raises(ValueError, match="dropout"):
        attn.CausalAttention(8, 8, 16, 1.5)
    with pytest.raises(ValueError):
        attn.MultiHeadAttention(8, 8, 0, 0.0, 2)


def test_memory_limit_is_a_memory_error():
    layer = attn.MultiHeadAttention(64, 64, 512, 0.0, 4, seed=1, max_workspace_bytes=4096)
    with pytest.raises(MemoryError, match="max_workspace_bytes|workspace"):
        layer(x_of((4, 512, 64)))


def test_state_dict_errors():
    layer = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, seed=1)
    sd = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, qkv_bias=True, seed=1).state_dict()
    with pytest.raises(ValueError, match="qkv_bias=False"):
        layer.load_state_dict(sd)
    wrong = attn.MultiHeadAttention(8, 4, 16, 0.0, 2, seed=1).state_dict()
    with pytest.raises(ValueError, match="d_out|shape"):
        layer.load_state_dict(wrong)
    v2 = attn.SelfAttention_v2(8, 8, seed=1).state_dict()
    with pytest.raises(ValueError, match="'v2' layer, which MultiHeadAttention cannot load"):
        layer.load_state_dict(v2)
    with pytest.raises(ValueError, match="'mha' layer, which CausalAttention cannot load"):
        attn.CausalAttention(8, 8, 16, 0.0).load_state_dict(layer.state_dict())
    # A causal mask buffer of another size is the same pattern: accepted, context_length kept.
    other_ctx = attn.MultiHeadAttention(8, 8, 32, 0.0, 2, seed=2)
    layer2 = attn.MultiHeadAttention(8, 8, 16, 0.0, 2, seed=1)
    layer2.load_state_dict(other_ctx.state_dict())
    assert layer2.context_length == 16
    x16 = x_of((1, 16, 8))
    np.testing.assert_array_equal(layer2(x16), other_ctx(x16))
    broken = dict(layer.state_dict())
    del broken["W_key.weight"]
    with pytest.raises(ValueError, match="W_key.weight"):
        layer.load_state_dict(broken)
    wrong_mask = dict(layer.state_dict())
    wrong_mask["mask"] = np.zeros((16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="causal"):
        layer.load_state_dict(wrong_mask)
    with pytest.raises(TypeError):
        layer.load_state_dict([1, 2])
    # a failed load leaves the layer as it was
    x = x_of((1, 5, 8))
    before = layer(x)
    with pytest.raises(ValueError):
        layer.load_state_dict(sd)
    np.testing.assert_array_equal(layer(x), before)


def test_load_errors(tmp_path, data_dir):
    with pytest.raises(OSError, match="nope.safetensors"):
        attn.load(str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="bad.safetensors"):
        attn.load(str(bad))
    import os
    with pytest.raises(ValueError, match="h.0|h.1|prefix"):
        attn.load(os.path.join(data_dir, "gpt2_2layers.safetensors"))
    layer = attn.load(os.path.join(data_dir, "gpt2_2layers.safetensors"), "h.0", threads=1)
    assert isinstance(layer, attn.MultiHeadAttention) and layer.threads == 1


def test_pool_fork_and_ragged_advance_match_the_forward():
    """Sessions of one CachePool: a fork shares the prompt, one advance mixes a 5-token chunk
    and single tokens, every output equals the full forward; release gives the blocks back."""
    layer = attn.MultiHeadAttention(8, 8, 300, 0.0, 2, seed=7)
    x = np.random.default_rng(3).standard_normal((2, 200, 8)).astype(np.float32)
    want = layer(x)
    pool = attn.CachePool(layer, 1 << 20)
    assert pool.block_positions > 0 and pool.used_bytes == 0
    a = layer.new_session(pool)
    b = layer.new_session(pool)
    np.testing.assert_allclose(a.prefill(x[0, :150]), want[0, :150], atol=1e-5, rtol=1e-5)
    used = pool.used_bytes
    f = a.fork()  # shares a's full blocks: only the partly filled last one is copied
    assert f.position == 150 and pool.used_bytes - used == pool.block_bytes
    outs = layer.advance([a, b, f], [x[0, 150:155], x[1, :1], x[0, 150:151]])
    np.testing.assert_allclose(outs[0], want[0, 150:155], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(outs[1], want[1, :1], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(outs[2], want[0, 150:151], atol=1e-5, rtol=1e-5)
    assert (a.position, b.position, f.position) == (155, 1, 151)
    with pytest.raises(ValueError, match="distinct"):
        layer.advance([a, a], [x[0, :1], x[0, :1]])
    with pytest.raises(ValueError, match=r"x\[1\] of shape \[tokens >= 1, d_in\]"):
        layer.advance([a, b], [x[0, :1], x[1, :0]])
    assert (a.position, b.position) == (155, 1)
    for s in (a, b, f):
        s.release()
    assert pool.used_bytes == 0 and pool.peak_used_bytes > 0


def test_pool_exhaustion_changes_nothing():
    layer = attn.MultiHeadAttention(4, 4, 1000, 0.0, 1, seed=1)
    with pytest.raises(ValueError, match="budget_bytes = 1 is below one block"):
        attn.CachePool(layer, 1)
    block = attn.CachePool(layer, 1 << 20).block_bytes
    pool = attn.CachePool(layer, 2 * block)  # 256 positions
    s = layer.new_session(pool)
    x = np.ones((300, 4), np.float32)
    with pytest.raises(MemoryError, match="pool"):
        s.prefill(x)
    assert s.position == 0 and pool.used_bytes == 0
    s.prefill(x[:256])
    assert pool.used_bytes == 2 * block
