"""A hot swap's first request: `textgen serve` (its own process, polling its model
directory, batching on as by default) serves version 1; one client sends `generate`
requests back to back to measure the steady p50; then a new version is pushed the
Pusher's way (a staging copy renamed into place) and, as soon as it is AVAILABLE, the
first request to it is timed. Repeated for several pushes; each first request's latency
is reported against the steady p50 (target: at most 2×).

Tutorial-sized GRU 1024, untrained (speed does not depend on the weights' values), its
export's warm-up requests (assets.extra/tf_serving_warmup_requests) replayed at load.
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Dict

import numpy as np

from bench import common

PROMPT = "ROMEO:"


def _generate(client, chars: int, seed: int):
    """(latency in seconds, the version that answered)."""
    request = {"prompts": np.array([PROMPT.encode()], object),
               "num_chars": np.array([chars], np.int32),
               "temperature": np.ones([1], np.float32), "seed": np.array([seed], np.int32)}
    start = time.perf_counter()
    prediction = client.predict(request, "generate")
    return time.perf_counter() - start, prediction.version


def _wait_available(stub, version: int, timeout: float = 300) -> None:
    from serving import protos
    request = protos.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "textgen"
    request.model_spec.version.value = version
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = stub.GetModelStatus(request, timeout=5).model_version_status[0]
            if status.state == protos.get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                return
        except Exception:  # noqa: BLE001 - not known yet: the poll has not seen it
            pass
        time.sleep(0.01)
    raise RuntimeError(f"version {version} did not become AVAILABLE within {timeout} s")


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rnn-units", type=int, default=1024)
    parser.add_argument("--chars", type=int, default=20, help="characters per request")
    parser.add_argument("--steady", type=int, default=40, help="requests for the steady p50")
    parser.add_argument("--swaps", type=int, default=5)
    args = parser.parse_args(argv)
    import grpc
    from bench.generation import build
    from bench.serving_load import free_port, start_server
    from serving import protos
    from serving.client import connect
    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        vocab = sorted(set(f.read()))
    _, export_dir = build(vocab, args.rnn_units)
    base = tempfile.mkdtemp(prefix="swap-")
    shutil.copytree(os.path.join(export_dir, "1"), os.path.join(base, "1"))
    port = free_port()
    server = start_server(base, port, extra_args=["--poll-seconds", "0.2"])
    firsts, steady_p50s = [], []
    try:
        with connect(server=f"127.0.0.1:{port}") as client, \
                grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
            for swap in range(1, args.swaps + 1):
                steady = [_generate(client, args.chars, seed)[0]
                          for seed in range(1, args.steady + 1)]
                steady_p50s.append(statistics.median(steady))
                version = swap + 1
                staging = os.path.join(base, f".tmp-{version}")
                shutil.copytree(os.path.join(export_dir, "1"), staging)
                os.rename(staging, os.path.join(base, str(version)))
                _wait_available(stub, version)
                latency, answered = _generate(client, args.chars, 7)
                if answered != version:
                    raise RuntimeError(f"the first request after the swap to {version} was "
                                       f"answered by version {answered}")
                firsts.append(latency)
                print(f"swap to version {version}: steady p50 {steady_p50s[-1] * 1000:.1f} "
                      f"ms, first request {latency * 1000:.1f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(export_dir, ignore_errors=True)
    ratios = [first / p50 for first, p50 in zip(firsts, steady_p50s)]
    results = {"rnn_units": args.rnn_units, "chars": args.chars, "swaps": args.swaps,
               "steady_p50_ms": [1000 * v for v in steady_p50s],
               "first_request_ms": [1000 * v for v in firsts],
               "first_over_steady": ratios, "worst_ratio": max(ratios),
               "machine": common.machine()}
    common.save_result("serving_swap", results)
    return results


def section(r) -> str:
    """docs/benchmarks.md's lines on a hot swap's first request, from serving_swap.json."""
    if r is None:
        return "Not measured yet: `.venv/bin/python -m bench.serving_swap`.\n"
    firsts = ", ".join(f"{v:.0f}" for v in r["first_request_ms"])
    return (f"GRU {r['rnn_units']}, `generate` of {r['chars']} characters, one client, "
            f"{r['swaps']} pushes (`.venv/bin/python -m bench.serving_swap`): steady p50 "
            f"{statistics.median(r['steady_p50_ms']):.0f} ms; the first request to each new "
            f"version {firsts} ms; worst first / steady p50 {r['worst_ratio']:.2f}× "
            "(target ≤ 2×).\n")


if __name__ == "__main__":
    main()
