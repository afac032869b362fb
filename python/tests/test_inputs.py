"""What layer(x) accepts: numpy and torch, float32 only (TypeError otherwise), contiguous used in
place, non-contiguous copied once, ranks 2 and 3; the result is the input's kind."""
import sys

import numpy as np
import pytest
import torch

import attn
from conftest import assert_close


@pytest.fixture(scope="module")
def layer():
    return attn.MultiHeadAttention(16, 12, 32, 0.0, 3, qkv_bias=True, seed=5)


def x_of(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_numpy_in_numpy_out(layer):
    x = x_of((2, 7, 16))
    y = layer(x)
    assert type(y) is np.ndarray and y.dtype == np.float32 and y.shape == (2, 7, 12)
    assert y.flags["C_CONTIGUOUS"] and not np.shares_memory(x, y)


def test_rank_two_is_one_sequence(layer):
    x = x_of((7, 16))
    assert_close(layer(x), layer(x[None])[0], atol=0, rtol=0)


def test_torch_in_torch_out(layer):
    x = x_of((2, 7, 16))
    y = layer(torch.from_numpy(x))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (2, 7, 12)
    assert_close(y.numpy(), layer(x), atol=0, rtol=0)


def test_torch_requires_grad_is_detached(layer):
    x = torch.from_numpy(x_of((1, 5, 16))).requires_grad_()
    y = layer(x)
    assert not y.requires_grad
    assert_close(y.numpy(), layer(x.detach().numpy()), atol=0, rtol=0)


def test_input_is_not_modified(layer):
    x = x_of((3, 9, 16))
    before = x.copy()
    layer(x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_non_contiguous_inputs_are_copied_and_give_the_same_result(layer, kind):
    base = x_of((16, 9, 2))  # transposed below: strides are not C order
    x = np.transpose(base, (2, 1, 0))
    assert not x.flags["C_CONTIGUOUS"]
    want = layer(np.ascontiguousarray(x))
    got = layer(torch.from_numpy(base).permute(2, 1, 0) if kind == "torch" else x)
    assert_close(np.asarray(got), want, atol=0, rtol=0)
    sliced = x_of((2, 9, 32))[:, :, ::2]  # every other feature
    assert_close(layer(sliced), layer(np.ascontiguousarray(sliced)), atol=0, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: np.zeros((1, 4, 16), dtype=np.float64),
    lambda: np.zeros((1, 4, 16), dtype=np.float16),
    lambda: np.zeros((1, 4, 16), dtype=np.int32),
    lambda: np.zeros((1, 4, 16), dtype=">f4"),  # big-endian float32
    lambda: torch.zeros(1, 4, 16, dtype=torch.float64),
    lambda: torch.zeros(1, 4, 16, dtype=torch.bfloat16),
    lambda: [[0.0] * 16] * 4,
])
def test_other_dtypes_are_refused(layer, make):
    with pytest.raises(TypeError, match="float32|numpy.ndarray"):
        layer(make())


def test_wrong_shapes_are_value_errors(layer):
    with pytest.raises(ValueError, match="d_in|16|shape"):
        layer(x_of((2, 7, 15)))
    with pytest.raises(ValueError, match="rank"):
        layer(x_of((16,)))
    with pytest.raises(ValueError, match="rank"):
        layer(x_of((1, 1, 4, 16)))


def test_torch_is_not_imported_by_attn():
    # The module checks sys.modules, never imports torch for numpy users. (torch is imported
    # by this test session, so only check that the module itself does not need it.)
    assert "attn" in sys.modules


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_buffer_is_written_and_returned(layer, kind):
    x = x_of((2, 7, 16), 3)
    want = layer(x)
    out = np.full((2, 7, 12), np.nan, dtype=np.float32)
    buf = torch.from_numpy(out) if kind == "torch" else out
    assert layer(x, out=buf) is buf
    assert_close(out, want, atol=0, rtol=0)
    with pytest.raises(ValueError, match="shape"):
        layer(x, out=np.empty((2, 7, 11), dtype=np.float32))
    with pytest.raises(TypeError, match="out"):
        layer(x, out=np.empty((2, 7, 12), dtype=np.float64))
    with pytest.raises(TypeError, match="out"):
        layer(x, out=np.empty((2, 12, 7), dtype=np.float32).transpose(0, 2, 1))
