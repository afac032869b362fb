"""Shared fixtures: the attn module (from PYTHONPATH), tolerances, the book's input."""
import os

import numpy as np
import pytest

import attn  # noqa: F401  (fails early with a clear message when PYTHONPATH is not set)

# The tolerance: |got - want| <= ATOL + RTOL * |want|, elementwise.
ATOL = 1e-5
RTOL = 1e-5

BOOK_X = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                   [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]],
                  dtype=np.float32)


def assert_close(got, want, atol=ATOL, rtol=RTOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), "output has NaN or Inf"
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    worst = np.unravel_index(np.argmax(err), err.shape) if err.size else ()
    assert err.size == 0 or err[worst] <= 0, (
        f"at {worst}: got {got[worst]!r}, want {want[worst]!r} "
        f"(tolerance {atol} + {rtol}*|want|)")


@pytest.fixture
def data_dir():
    d = os.environ.get("ATTN_TEST_DATA_DIR",
                       os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data"))
    return d
