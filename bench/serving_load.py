"""Serving under load: N concurrent clients on loopback against `textgen serve` (its own
process, as in production), each sending requests back to back for a fixed time.

  generate  one `generate` request per 200 characters (batch 1, the loop in the graph)
  stream    the one-step signature, one request per character, state carried by the
            client (serving.client.Client.stream): what a token-streaming UI does

Reported per mode and client count: requests/s, characters/s, p50/p99 request latency,
errors (anything but a completed response). Tutorial-sized model, untrained weights
(speed does not depend on their values). Each mode runs with server-side batching off
and on (`textgen serve --enable_batching --batching_parameters_file`, by default the
deploy/config/batching.config that TF Serving uses). The client counts are measured in
turn, `--rounds` times, and the ratios to one client are taken within each round: this
machine's speed drifts by more between minutes than the gains being measured.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from bench import common
from bench.generation import PROMPT, build

CHARS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BATCHING_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "deploy", "config", "batching.config")


def start_server(model_dir: str, port: int, batching_file=None,
                 extra_args=None) -> subprocess.Popen:
    """`textgen serve` with batching from batching_file (None: off), or with extra_args
    instead (then batching is as they say)."""
    from serving.client import connect
    if extra_args is None:
        extra_args = ["--no-batching"] if batching_file is None else [
            "--enable_batching", "--batching_parameters_file", batching_file]
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "textgen"), "serve", "--model-dir",
         model_dir, "--port", str(port), "--no-rest", "--poll-seconds", "0", *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"textgen serve exited {server.returncode}: "
                               f"{server.stderr.read()[-2000:]}")
        try:
            with connect(server=f"127.0.0.1:{port}") as client:
                client.state_size()
            return server
        except Exception:  # not listening or not loaded yet
            time.sleep(1)
    server.kill()
    raise RuntimeError("textgen serve did not become ready within 600 s")


def load(target: str, mode: str, clients: int, seconds: float):
    from serving.client import connect
    latencies, streams, errors = [], [], []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client_loop(index):
        mine, my_streams, my_errors = [], [], []
        with connect(server=target) as client:
            client.state_size()  # metadata fetched before the clock starts
            start_barrier.wait()
            request = 0
            while time.perf_counter() < stop_at[0]:
                request += 1
                try:
                    if mode == "generate":
                        t0 = time.perf_counter()
                        client.generate([PROMPT], CHARS, temperature=1.0,
                                        seed=index * 100_000 + request)
                        mine.append(time.perf_counter() - t0)
                    else:
                        s0 = t0 = time.perf_counter()
                        for _ in client.stream(PROMPT, CHARS, temperature=1.0,
                                               seed=index * 100_000 + request):
                            now = time.perf_counter()
                            mine.append(now - t0)
                            t0 = now
                        my_streams.append(time.perf_counter() - s0)
                except Exception as e:  # counted, not raised: the run goes on
                    my_errors.append(repr(e)[:200])
        with lock:
            latencies.extend(mine)
            streams.extend(my_streams)
            errors.extend(my_errors)

    elapsed = common.run_clients([lambda i=i: client_loop(i) for i in range(clients)],
                                 start_barrier, stop_at, seconds)
    requests = len(latencies)
    chars = requests * (CHARS if mode == "generate" else 1)
    result = {"clients": clients, "seconds": elapsed, "requests": requests,
              "requests_per_s": requests / elapsed, "chars_per_s": chars / elapsed,
              "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
              "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None,
              "errors": len(errors), "error_examples": errors[:3]}
    if streams:
        result["p50_stream_ms"] = 1000 * float(np.percentile(streams, 50))
    return result


def summarize(rounds):
    """Per client count, the round with the median chars/s, and beside it every round's
    chars/s and the median of the rounds' ratios to one client's chars/s in the same round
    (the machine's speed drifts between rounds more than between the levels of one)."""
    levels = []
    for i in range(len(rounds[0])):
        runs = sorted((r[i] for r in rounds), key=lambda r: r["chars_per_s"])
        level = dict(runs[(len(runs) - 1) // 2])
        level["rounds_chars_per_s"] = [r[i]["chars_per_s"] for r in rounds]
        level["errors"] = sum(r[i]["errors"] for r in rounds)
        if rounds[0][0]["clients"] == 1:
            level["paired_ratio"] = float(np.median(
                [r[i]["chars_per_s"] / r[0]["chars_per_s"] for r in rounds]))
        levels.append(level)
    return levels


def measure(export_dir: str, batching_file, clients, seconds, modes, rounds):
    port = free_port()
    server = start_server(export_dir, port, batching_file)
    results = {}
    try:
        for mode in modes:
            load(f"127.0.0.1:{port}", mode, 1, 3)  # warm-up: first calls trace and allocate
            measured = []
            for round_ in range(rounds):
                measured.append([])
                for count in clients:
                    row = load(f"127.0.0.1:{port}", mode, count, seconds)
                    measured[-1].append(row)
                    print(mode, "batching" if batching_file else "alone", f"round {round_ + 1}",
                          {k: (round(v, 1) if isinstance(v, float) else v)
                           for k, v in row.items() if k != "error_examples"}, flush=True)
            results[mode] = summarize(measured)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--rnn-units", type=int, default=1024)
    parser.add_argument("--modes", default="generate,stream")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each mode's client counts are measured, in turn; the "
                             "table shows the median round and the median ratio")
    parser.add_argument("--batching-config", default=BATCHING_CONFIG,
                        help="BatchingParameters file for the runs with batching on")
    args = parser.parse_args(argv)
    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        vocab = sorted(set(f.read()))
    _, export_dir = build(vocab, args.rnn_units)
    clients = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    with open(args.batching_config, encoding="utf-8") as f:
        config_text = f.read()
    results = {"chars_per_request": CHARS, "rnn_units": args.rnn_units,
               "seconds_per_level": args.seconds, "rounds": args.rounds,
               "batching_config": "".join(line + "\n" for line in config_text.splitlines()
                                          if line.strip() and not line.startswith("#")),
               "modes": {mode: {} for mode in modes}}
    try:
        for batching, batching_file in (("off", None), ("on", args.batching_config)):
            measured = measure(export_dir, batching_file, clients, args.seconds, modes,
                               args.rounds)
            for mode in modes:
                results["modes"][mode][batching] = measured[mode]
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    results["machine"] = common.machine()
    common.save_result("serving_load", results)
    return results


if __name__ == "__main__":
    main()
