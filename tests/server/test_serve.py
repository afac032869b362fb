"""attn serve end to end: a server started on an ephemeral loopback port, driven over HTTP.

Run by CTest (tests/CMakeLists.txt) as
  /usr/bin/python3 -m pytest tests/server -q
with ATTN (the attn binary) and ATTN_DATA (tests/data) in the environment.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ATTN = os.environ.get("ATTN", "build/release/tools/attn")
DATA = os.environ.get("ATTN_DATA", "tests/data")
WEIGHTS = os.path.join(DATA, "mha_b3.safetensors")  # causal MHA: d_in 7, d_out 6, context 12
X = np.load(os.path.join(DATA, "mha_b3.input.npy"))  # [3, 11, 7]
Y = np.load(os.path.join(DATA, "mha_b3.output.npy"))  # PyTorch's forward, [3, 11, 6]
D_IN, D_OUT = X.shape[-1], Y.shape[-1]


class Server:
    """An `attn serve` process on 127.0.0.1, port 0 (the bound port is read from stdout)."""

    def __init__(self, *flags):
        # Under ThreadSanitizer the uninstrumented TBB runtime is left out (as in the C++ tests).
        backend = ["--backend", "serial"] if "thread" in os.environ.get("ATTN_SANITIZE", "") else []
        self.proc = subprocess.Popen(
            [ATTN, "serve", "--weights", WEIGHTS, "--host", "127.0.0.1", "--port", "0",
             "--threads", "1", *backend, *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("attn serve did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port

    def request(self, method, path, body=None, headers=None, timeout=30):
        """Returns (status, headers, body bytes); HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def get(self, path):
        return self.request("GET", path)

    def infer(self, payload, model="attn", headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", "/v2/models/%s/infer" % model, body, h)

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server():
    s = Server("--max-request-bytes", "16384")
    yield s
    assert s.stop() == 0


def json_request(x, params=None, outputs=None):
    req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                       "data": x.astype(np.float32).ravel().tolist()}]}
    if params:
        req["parameters"] = params
    if outputs is not None:
        req["outputs"] = outputs
    return req


def binary_request(x, params=None, binary_output=True):
    raw = x.astype("<f4").tobytes()
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": len(raw)}}]}
    if params:
        head["parameters"] = dict(params)
    if binary_output:
        head["outputs"] = [{"name": "y", "parameters": {"binary_data": True}}]
    h = json.dumps(head).encode()
    return h + raw, {"Inference-Header-Content-Length": str(len(h)),
                     "Content-Type": "application/octet-stream"}


def output_of(status, headers, body):
    """Returns y as an array from a JSON or binary response."""
    assert status == 200, body
    n = headers.get("Inference-Header-Content-Length")
    if n is None:
        out = json.loads(body)["outputs"][0]
        return np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    head = json.loads(body[:int(n)])
    out = head["outputs"][0]
    assert out["parameters"]["binary_data_size"] == len(body) - int(n)
    return np.frombuffer(body[int(n):], dtype="<f4").reshape(out["shape"])


def assert_error(resp, status):
    code, headers, body = resp
    assert code == status, body
    assert "application/json" in headers.get("Content-Type", "")
    assert isinstance(json.loads(body)["error"], str)


def test_health_and_metadata(server):
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    status, _, body = server.get("/v2")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "attn" and "binary_tensor_data" in meta["extensions"]
    status, _, body = server.get("/v2/models/attn")
    meta = json.loads(body)
    assert status == 200
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, D_IN]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, -1, D_OUT]}]
    assert server.get("/v2/models/attn/ready")[0] == 200
    assert server.get("/v2/models/attn/versions/1")[0] == 200


def test_unknown_model_and_path(server):
    assert_error(server.get("/v2/models/nope"), 404)
    assert_error(server.get("/v2/models/nope/ready"), 404)
    assert_error(server.infer(json_request(X[0, :2]), model="nope"), 404)
    assert_error(server.get("/v3/anything"), 404)


def test_json_infer_equals_forward(server):
    y = output_of(*server.infer(json_request(X[0])))  # [seq_len, d_in]
    np.testing.assert_allclose(y, Y[0], atol=1e-5, rtol=1e-5)
    y = output_of(*server.infer(json_request(X)))  # [batch, seq_len, d_in]
    assert y.shape == Y.shape
    np.testing.assert_allclose(y, Y, atol=1e-5, rtol=1e-5)


def test_binary_infer_equals_forward(server):
    body, headers = binary_request(X[1])
    y = output_of(*server.infer(body, headers=headers))
    np.testing.assert_allclose(y, Y[1], atol=1e-5, rtol=1e-5)
    # Binary in, JSON out; and binary out asked for by the request-level parameter.
    body, headers = binary_request(X[2], binary_output=False)
    status, h, b = server.infer(body, headers=headers)
    assert h.get("Inference-Header-Content-Length") is None
    np.testing.assert_allclose(output_of(status, h, b), Y[2], atol=1e-5, rtol=1e-5)
    status, h, b = server.infer(json_request(X[2], params={"binary_data_output": True}))
    assert h.get("Inference-Header-Content-Length") is not None
    np.testing.assert_allclose(output_of(status, h, b), Y[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sequence_id", [17, "chat-42"])
@pytest.mark.parametrize("binary", [False, True])
def test_sequence_equals_forward(server, sequence_id, binary):
    x = X[1]  # 11 tokens: a prompt of 4, then 7 one-token steps
    pieces = [x[:4]] + [x[i:i + 1] for i in range(4, len(x))]
    got = []
    for i, piece in enumerate(pieces):
        params = {"sequence_id": sequence_id}
        if i == 0:
            params["sequence_start"] = True
        if i == len(pieces) - 1:
            params["sequence_end"] = True
        if binary:
            body, headers = binary_request(piece, params)
            resp = server.infer(body, headers=headers)
        else:
            resp = server.infer(json_request(piece, params))
        got.append(output_of(*resp))
        if i == 0:
            meta = json.loads(resp[2][:int(resp[1]["Inference-Header-Content-Length"])]
                              if binary else resp[2])
            assert meta["parameters"]["sequence_id"] == sequence_id
    np.testing.assert_allclose(np.concatenate(got), Y[1], atol=1e-5, rtol=1e-5)
    # Ended: the id is unknown again.
    assert_error(server.infer(json_request(x[:1], {"sequence_id": sequence_id})), 400)


def test_sequence_start_resets(server):
    params = {"sequence_id": "again", "sequence_start": True}
    output_of(*server.infer(json_request(X[0, :5], params)))
    y = output_of(*server.infer(json_request(X[2, :3], params)))  # starts over
    np.testing.assert_allclose(y, Y[2, :3], atol=1e-5, rtol=1e-5)
    output_of(*server.infer(json_request(X[2, 3:4], {"sequence_id": "again",
                                                      "sequence_end": True})))


@pytest.mark.parametrize("case,payload,status", [(i,) + c for i, c in enumerate([
    (b"{not json", 400),
    (b"[]", 400),
    (b'{"inputs": 3}', 400),
    (json.dumps(json_request(X[0, :2])).replace('"FP32"', '"INT8"').encode(), 400),
    (json.dumps(json_request(X[0, :2])).replace('"x"', '"q"').encode(), 400),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, D_IN],
                             "data": [1.0] * (2 * D_IN - 1)}]}).encode(), 400),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, D_IN + 1],
                             "data": [1.0] * (2 * D_IN)}]}).encode(), 400),  # wrong d_in
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, D_IN + 1],
                             "data": [1.0] * (2 * D_IN + 2)}]}).encode(), 400),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [13, D_IN],
                             "data": [1.0] * (13 * D_IN)}]}).encode(), 400),  # > context 12
    (json.dumps(json_request(X[0, :2], outputs=[{"name": "z"}])).encode(), 400),
    (json.dumps(json_request(X[0, :2], {"sequence_id": 999})).encode(), 400),  # no start
    (json.dumps(json_request(X[0, :2], {"sequence_id": -1})).encode(), 400),
    (json.dumps(json_request(X[:2, :2], {"sequence_id": 5, "sequence_start": True})).encode(),
     400),  # batch 2 in a sequence
    (b"[" * 10000, 400),
    (b" " * 20000, 413),  # over --max-request-bytes 16384
])], ids=lambda v: str(v) if isinstance(v, int) else "")
def test_bad_requests(server, case, payload, status):
    assert_error(server.infer(payload), status)


def test_bad_binary_requests(server):
    body, headers = binary_request(X[0, :2])
    assert_error(server.infer(body[:-1], headers=headers), 400)  # short binary data
    assert_error(server.infer(body + b"\0", headers=headers), 400)  # trailing bytes
    headers["Inference-Header-Content-Length"] = str(len(body) + 1)
    assert_error(server.infer(body, headers=headers), 400)
    headers["Inference-Header-Content-Length"] = "ten"
    assert_error(server.infer(body, headers=headers), 400)


def test_metrics(server):
    output_of(*server.infer(json_request(X[0, :3])))
    m = server.metrics()
    for name in ["attn_engine_calls_total", "attn_generated_tokens_total",
                 "attn_prefilled_tokens_total", "attn_live_sequences", "attn_pool_used_bytes",
                 "attn_pool_capacity_bytes", "attn_queue_depth",
                 "attn_request_duration_seconds_count", "attn_batch_tokens_count",
                 'attn_requests_total{endpoint="infer",status="200"}',
                 'attn_requests_total{endpoint="infer",status="400"}']:
        assert name in m, name
    assert m["attn_queue_depth"] == 0
    assert m["attn_pool_used_bytes"] <= m["attn_pool_capacity_bytes"]
    assert m["attn_prefilled_tokens_total"] >= 3


def test_disconnects_leak_nothing(server):
    body = json.dumps(json_request(X[0])).encode()
    before = server.metrics()
    for cut in [10, len(body) // 2, len(body)]:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /v2/models/attn/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            s.sendall(body[:cut])
            s.close()  # before (or without) reading the answer
    # A sequence whose client vanished is dropped by --sequence-timeout (tested below);
    # here: nothing queued, no session kept beyond the scratch ones, and service continues.
    time.sleep(0.5)
    after = server.metrics()
    assert after["attn_queue_depth"] == 0
    assert after["attn_live_sequences"] == before["attn_live_sequences"]
    y = output_of(*server.infer(json_request(X[0])))
    np.testing.assert_allclose(y, Y[0], atol=1e-5, rtol=1e-5)


def test_sequence_timeout_frees_the_cache():
    s = Server("--sequence-timeout", "0.3")
    try:
        output_of(*s.infer(json_request(X[0, :2], {"sequence_id": 1, "sequence_start": True})))
        assert s.metrics()["attn_live_sequences"] == 1
        time.sleep(1.0)
        m = s.metrics()
        assert m["attn_live_sequences"] == 0 and m["attn_expired_sequences_total"] == 1
        assert_error(s.infer(json_request(X[0, 2:3], {"sequence_id": 1})), 400)
    finally:
        assert s.stop() == 0


def test_pool_budget_admits_sequences_by_blocks():
    """--max-cache-bytes is a CachePool of 128-position blocks (6144 bytes each for this layer):
    two blocks hold two live sequences; a third is refused with 429 until one ends, and
    stateless requests wait for a block instead of failing."""
    s = Server("--max-cache-bytes", str(2 * 6144))
    try:
        for sid in (1, 2):
            y = output_of(*s.infer(json_request(X[0, :4], {"sequence_id": sid, "sequence_start": True})))
            np.testing.assert_allclose(y, Y[0, :4], atol=1e-5, rtol=1e-5)
        m = s.metrics()
        assert m["attn_pool_capacity_bytes"] == 2 * 6144
        assert m["attn_pool_used_bytes"] == 2 * 6144
        code, _, body = s.infer(json_request(X[0, :4], {"sequence_id": 3, "sequence_start": True}))
        assert code == 429 and b"KV-cache pool is full" in body, body
        # Both blocks are promised: a stateless request waits, so end sequence 1 meanwhile.
        y = output_of(*s.infer(json_request(X[1, 4:5], {"sequence_id": 1, "sequence_end": True})))
        assert y.shape == (1, 6) and np.isfinite(y).all()  # sequence 1 holds X[0]'s prefix
        np.testing.assert_allclose(output_of(*s.infer(json_request(X))), Y, atol=1e-5, rtol=1e-5)
        y = output_of(*s.infer(json_request(X[2, :5], {"sequence_id": 3, "sequence_start": True})))
        np.testing.assert_allclose(y, Y[2, :5], atol=1e-5, rtol=1e-5)
        assert s.metrics()["attn_pool_used_bytes"] == 2 * 6144
    finally:
        assert s.stop() == 0


def test_overload_gets_only_200_429_503_then_serves():
    # One token per engine batch keeps requests in the queue long enough to fill it.
    s = Server("--max-queue", "2", "--max-sequences", "3", "--http-threads", "16",
               "--max-batch-tokens", "1")
    try:
        output_of(*s.infer(json_request(X[0])))  # warm: scratch sessions and buffers exist
        baseline = s.rss_kib()

        def one(i):
            if i % 2:
                status, _, body = s.infer(json_request(X[i % 3], {"sequence_id": 1000 + i,
                                                                  "sequence_start": True}))
            else:
                body, headers = binary_request(X)
                status, _, body = s.infer(body, headers=headers)
            return status, (json.loads(body).get("error", "") if status != 200 else "")

        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(one, range(400)))
        statuses = {status for status, _ in results}
        assert statuses <= {200, 429, 503}, statuses
        assert 200 in statuses
        errors = " ".join(error for _, error in results)
        assert "--max-queue" in errors and "--max-sequences" in errors
        # The sequences admitted above are still live (no end): at most --max-sequences.
        m = s.metrics()
        assert m["attn_live_sequences"] <= 3 and m["attn_queue_depth"] == 0
        y = output_of(*s.infer(json_request(X[1])))
        np.testing.assert_allclose(y, Y[1], atol=1e-5, rtol=1e-5)
        assert s.rss_kib() < baseline + 32 * 1024  # KiB: memory back near the baseline
    finally:
        assert s.stop() == 0


def test_graceful_shutdown_finishes_in_flight():
    s = Server("--max-batch-tokens", "1")  # slow down a long request: one token per batch
    results = []
    x = np.tile(X, (200, 1, 1))  # 600 sequences of 11 tokens: 6600 batches
    t = threading.Thread(target=lambda: results.append(s.infer(json_request(x))))
    t.start()
    deadline = time.time() + 20
    while s.metrics()["attn_queue_depth"] < 1:  # admitted: in flight
        assert time.time() < deadline and t.is_alive()
        time.sleep(0.002)
    start = time.time()
    s.proc.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    assert s.proc.wait(timeout=60) == 0
    assert time.time() - start < 30
    y = output_of(*results[0])  # answered in full, not cut off
    np.testing.assert_allclose(y, np.tile(Y, (200, 1, 1)), atol=1e-5, rtol=1e-5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)


def test_port_in_use_is_an_error(server):
    r = subprocess.run([ATTN, "serve", "--weights", WEIGHTS, "--port", str(server.port)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot listen" in r.stderr


def test_sigint_stops_an_idle_server():
    s = Server()
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=15) == 0


def test_loadgen_runs_and_refuses_other_hosts(server):
    for mode in ["stateless", "sequence"]:
        r = subprocess.run([ATTN, "loadgen", "--url", server.url, "--mode", mode, "--requests",
                            "24", "--concurrency", "3", "--prompt-min", "1", "--prompt-max", "4",
                            "--steps", "3", "--format", "json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + r.stdout
        report = json.loads(r.stdout)
        assert report["statuses"] == {"200": report["requests"]} and report["requests"] > 0
    for url in ["http://192.0.2.1:80", "http://127.example.com:80", "http://[2001:db8::1]:80"]:
        r = subprocess.run([ATTN, "loadgen", "--url", url, "--requests", "1"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "loopback" in r.stderr, url
