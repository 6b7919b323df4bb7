"""Serving overhead and robustness: the model API (uvicorn in a subprocess, httpx clients in threads)
against calling the same model in-process, then 10,000 mixed valid and invalid requests.

  in-process  what a request handler computes, without HTTP: decode the payload, prepare the
              input as the clean/transform stages do, embed, zero-shot classify (same served model)
  api         POST /classify with the same payload (JSON, base64) to `flywheel serve-model`

Single: one client, requests back to back (latency p50/p99). Concurrent: `--clients` threads, each
with its own connection (throughput, latency under load). Overhead ratio = api / in-process (p50
latency, and throughput the other way round). Server and clients share this machine's cores.
Then `--mixed` requests (about half invalid: bad base64, not an image, not audio, silence, unknown
modality, wrong types, malformed JSON, oversize bodies, unknown paths) from the same clients: every
status is counted, 5xx must stay at zero and /health must answer ok afterwards.

The registry is a scratch FLYWHEEL_HOME with an untrained champion (the cost does not depend on the
weights) unless `--home` names one that has a champion.
Usage: python benchmarks/serving.py [--requests 200] [--clients 4] [--mixed 10000] [--home DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from features.env import apply_process_environment  # noqa: E402

apply_process_environment()

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

MAX_BODY = 1_000_000  # the benchmark server's body limit, so oversize requests stay cheap to send


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def latency_stats(seconds: list[float], wall: float) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "throughput_rps": round(len(ms) / wall, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scratch_home(root: Path) -> Path:
    from tests.unit.serving_support import build_registry

    home = root / "home"
    build_registry(home)
    return home


def benchmark_params(root: Path) -> Path:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params.setdefault("serve", {})["max_body_bytes"] = MAX_BODY
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def start_server(home: Path, params: Path, port: int) -> subprocess.Popen:
    cli = str(Path(sys.executable).with_name("flywheel"))
    server = subprocess.Popen([cli, "serve-model", "--home", str(home), "--params", str(params), "--port", str(port)],
                              cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError("server did not answer /health within 180 s")


def payloads() -> dict[str, dict]:
    from tests.unit.serving_support import digit_png, tone_wav

    return {"image": {"modality": "image", "data_base64": base64.b64encode(digit_png(7)).decode()},
            "audio": {"modality": "audio", "data_base64": base64.b64encode(tone_wav(300, seconds=1.0)).decode()},
            "text": {"modality": "text", "text": "a handwritten digit seven"}}


def in_process_call(served, limits):
    from models.serving.payloads import decode_base64, prepare_bytes, prepare_text
    from models.serving.scoring import score_item

    def call(item: dict) -> None:
        prepared = (prepare_text(item["text"], limits) if item["modality"] == "text"
                    else prepare_bytes(item["modality"], decode_base64(item["data_base64"]), served.spec, limits))
        score_item(served, item["modality"], prepared.values)

    return call


def run_clients(n_clients: int, jobs: list, work) -> tuple[list[float], float, list]:
    """`work(client, job) -> result` over all jobs from `n_clients` threads; per-job seconds, wall, results."""
    lock, cursor = threading.Lock(), iter(range(len(jobs)))
    seconds: list[float] = [0.0] * len(jobs)
    results: list = [None] * len(jobs)

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                started = time.perf_counter()
                results[i] = work(client, jobs[i])
                seconds[i] = time.perf_counter() - started

    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seconds, time.perf_counter() - started, results


def mixed_requests(n: int, items: dict[str, dict], seed: int = 0) -> list[tuple[str, str, dict]]:
    """(method, path, httpx kwargs) for n requests, about half of them invalid in some way."""
    from tests.unit.serving_support import digit_png

    png = digit_png(3)
    valid = [
        ("POST", "/classify", {"json": items["image"]}), ("POST", "/classify", {"json": items["audio"]}),
        ("POST", "/classify", {"json": items["text"]}), ("POST", "/embed", {"json": items["text"]}),
        ("POST", "/search", {"json": {**items["text"], "target": "image", "k": 5}}),
        ("POST", "/search", {"json": {**items["audio"], "target": "image", "k": 3}}),
        ("POST", "/classify/upload", {"data": {"modality": "image"}, "files": {"file": ("3.png", png)}}),
        ("GET", "/model", {}), ("GET", "/health", {}),
    ]
    invalid = [
        ("POST", "/classify", {"json": {"modality": "image", "data_base64": "@@not base64@@"}}),
        ("POST", "/classify", {"json": {"modality": "image", "data_base64": base64.b64encode(b"text, no image").decode()}}),
        ("POST", "/classify", {"json": {"modality": "audio", "data_base64": base64.b64encode(png).decode()}}),
        ("POST", "/classify", {"json": {"modality": "audio", "data_base64": base64.b64encode(b"RIFF\x00\x00WAVE").decode()}}),
        ("POST", "/classify", {"json": {"modality": "smell", "text": "roses"}}),
        ("POST", "/classify", {"json": {"modality": "text", "text": 7}}),
        ("POST", "/classify", {"json": {"modality": "text", "text": ""}}),
        ("POST", "/search", {"json": {**items["text"], "target": "video"}}),
        ("POST", "/search", {"json": {**items["text"], "target": "image", "k": -1}}),
        ("POST", "/embed", {"content": b'{"modality": "image", "data_base64": ', "headers": {"content-type": "application/json"}}),
        ("POST", "/embed", {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}}),
        ("POST", "/embed", {"json": {"modality": "image", "data_base64": "A" * (MAX_BODY + 100)}}),
        ("POST", "/embed/upload", {"data": {"modality": "audio"}, "files": {"file": ("x.wav", b"\x00" * 2000)}}),
        ("POST", "/embed/upload", {"data": {"modality": "image"}}),
        ("GET", "/embed", {}), ("POST", "/nowhere", {"json": {}}),
    ]
    rng = random.Random(seed)
    return [rng.choice(valid if rng.random() < 0.5 else invalid) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per modality, single client")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--mixed", type=int, default=10_000, help="mixed valid/invalid requests")
    parser.add_argument("--home", type=Path, help="FLYWHEEL_HOME with a champion (default: a scratch one)")
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "serving.json")
    args = parser.parse_args()

    import psutil
    import torch

    from flows.serving import payload_limits
    from flows.settings import load_settings
    from flows.stage_config import registry_for
    from models.registry import CHAMPION
    from models.serving.holder import ServingKey
    from models.serving.loading import load_served_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = args.home or scratch_home(root)
        params = benchmark_params(root)
        settings = load_settings(home, params)
        registry = registry_for(settings)
        version = registry.alias_version(CHAMPION)
        served = load_served_model(registry, ServingKey(version), settings.paths.model_inputs, settings.task)
        torch.set_num_threads(settings.params.serve.torch_threads)  # as the server does
        call = in_process_call(served, payload_limits(settings))
        items = payloads()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        server = start_server(home, params, port)
        startup_s = time.perf_counter() - started
        process = psutil.Process(server.pid)
        try:
            rows: list[dict] = []
            for modality, item in items.items():
                for _ in range(5):  # warm-up both paths
                    call(item)
                    httpx.post(f"{base}/classify", json=item)
                local, remote = [], []
                with httpx.Client(timeout=60) as client:
                    for _ in range(args.requests):  # interleaved, so machine noise hits both alike
                        s = time.perf_counter()
                        call(item)
                        local.append(time.perf_counter() - s)
                        s = time.perf_counter()
                        status = client.post(f"{base}/classify", json=item).status_code
                        remote.append(time.perf_counter() - s)
                        assert status == 200, status
                rows.append({"mode": "single", "modality": modality, "in_process": latency_stats(local, sum(local)),
                             "api": latency_stats(remote, sum(remote))})
            concurrent_jobs = [items[m] for m in ("image", "audio", "text")] * args.requests
            local_threads, local_wall, _ = run_clients(args.clients, concurrent_jobs, lambda c, j: call(j))
            api_threads, api_wall, codes = run_clients(args.clients, concurrent_jobs,
                                                       lambda c, j: c.post(f"{base}/classify", json=j).status_code)
            assert set(codes) == {200}, Counter(codes)
            rows.append({"mode": f"{args.clients} clients", "modality": "mixed", "in_process": latency_stats(local_threads, local_wall),
                         "api": latency_stats(api_threads, api_wall)})
            for row in rows:
                row["overhead_p50"] = round(row["api"]["p50_ms"] / row["in_process"]["p50_ms"], 2)
                row["throughput_ratio"] = round(row["api"]["throughput_rps"] / row["in_process"]["throughput_rps"], 3)

            rss_before = process.memory_info().rss
            requests = mixed_requests(args.mixed, items)

            def send(client: httpx.Client, job) -> int:
                method, path, kwargs = job
                return client.request(method, f"{base}{path}", **kwargs).status_code

            mixed_s, mixed_wall, statuses = run_clients(args.clients, requests, send)
            health = httpx.get(f"{base}/health", timeout=10)
            counts = Counter(statuses)
            mixed = {"requests": len(statuses), "status_counts": {str(k): v for k, v in sorted(counts.items())},
                     "server_errors": sum(v for k, v in counts.items() if k >= 500),
                     "valid_share": round(sum(v for k, v in counts.items() if k < 400) / len(statuses), 3),
                     "seconds": round(mixed_wall, 1), **latency_stats(mixed_s, mixed_wall),
                     "health_after": health.json(), "server_alive": server.poll() is None,
                     "server_rss_mb_before": round(rss_before / 2**20, 1),
                     "server_rss_mb_after": round(process.memory_info().rss / 2**20, 1)}
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log_lines = sum(1 for p in settings.paths.inference.glob("*/*.jsonl") for _ in p.open())

    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                          "load_average_1m": round(os.getloadavg()[0], 2)},
              "server_startup_s": round(startup_s, 1), "model_version": version, "rows": rows, "mixed": mixed,
              "inference_log_lines": log_lines}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"server start to healthy: {startup_s:.1f} s; {os.cpu_count()} CPUs shared by server and clients")
    print(f"{'mode':<11} {'modality':<8} {'in-proc p50':>11} {'p99':>8} {'rps':>7} | {'API p50':>8} {'p99':>8} {'rps':>7} | "
          f"{'p50 ratio':>9} {'rps ratio':>9}")
    for r in rows:
        i, a = r["in_process"], r["api"]
        print(f"{r['mode']:<11} {r['modality']:<8} {i['p50_ms']:>9.2f}ms {i['p99_ms']:>6.2f}ms {i['throughput_rps']:>7.1f} | "
              f"{a['p50_ms']:>6.2f}ms {a['p99_ms']:>6.2f}ms {a['throughput_rps']:>7.1f} | {r['overhead_p50']:>9.2f} "
              f"{r['throughput_ratio']:>9.3f}")
    print(f"mixed: {mixed['requests']} requests in {mixed['seconds']} s ({mixed['throughput_rps']} rps, p50 "
          f"{mixed['p50_ms']} ms, p99 {mixed['p99_ms']} ms); statuses {mixed['status_counts']}; "
          f"5xx: {mixed['server_errors']}; /health after: {mixed['health_after']}; "
          f"RSS {mixed['server_rss_mb_before']} → {mixed['server_rss_mb_after']} MB")
    print(f"inference log lines written: {log_lines}; results: {args.out}")
    if mixed["server_errors"] or mixed["health_after"].get("status") != "ok":
        raise SystemExit("FAILED: server errors or unhealthy after the mixed load")


if __name__ == "__main__":
    main()
