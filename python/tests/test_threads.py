"""Several Python threads call layers at once: the GIL is released while the engine runs and
every result equals the single-threaded one."""
import threading
import time

import numpy as np

import attn
from conftest import assert_close


def test_concurrent_calls_on_one_layer_and_on_several():
    layers = [attn.MultiHeadAttention(64, 64, 128, 0.0, 4, seed=s, threads=1) for s in range(3)]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 100, 64)).astype(np.float32) for _ in range(6)]
    want = {(li, xi): layers[li](x) for li in range(3) for xi, x in enumerate(inputs)}
    errors = []

    def worker(t):
        try:
            for rep in range(15):
                li, xi = (t + rep) % 3, (t * 7 + rep) % 6
                got = layers[li](inputs[xi])
                np.testing.assert_array_equal(got, want[(li, xi)])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_gil_is_released_during_forward():
    """A pure-Python counter keeps running while another thread is inside layer(x)."""
    layer = attn.MultiHeadAttention(256, 256, 1024, 0.0, 4, seed=1, threads=1)
    x = np.random.default_rng(1).standard_normal((2, 1024, 256)).astype(np.float32)
    stop = threading.Event()
    ticks = [0]

    def count():
        while not stop.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    before = ticks[0]
    start = time.perf_counter()
    for _ in range(3):
        layer(x)
    elapsed = time.perf_counter() - start
    during = ticks[0] - before
    stop.set()
    counter.join()
    # With the GIL held for the whole call the counter would barely move (only at the switch
    # interval between calls); released, it keeps counting.
    assert elapsed > 0.01 and during > 1000, (elapsed, during)


def test_sessions_in_threads():
    layer = attn.MultiHeadAttention(32, 32, 64, 0.0, 4, seed=2)
    rng = np.random.default_rng(2)
    seqs = [rng.standard_normal((20, 32)).astype(np.float32) for _ in range(4)]
    want = [layer(s) for s in seqs]
    got = [None] * 4

    def decode(i):
        s = layer.new_session()
        rows = [s.prefill(seqs[i][:5])]
        rows += [s.step(seqs[i][t:t + 1]) for t in range(5, 20)]
        got[i] = np.concatenate(rows)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        assert_close(g, w)
