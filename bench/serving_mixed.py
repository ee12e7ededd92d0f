"""Serving real, mixed traffic: `textgen serve` (its own process) on loopback under

  short     8 clients × 20 characters, alone
  mixed     8 × 20 characters beside 8 × 1,000 (a chat caller beside a batch job)
  uniform   16 × 200 characters, and 1 × 200
  bad       8 clients scoring good examples beside 1 sending examples that do not parse

several ways: batching off (`--no-batching`), request-level merging (`--generate-chunk 0`:
a merged `generate` runs to its longest row, as TF Serving's batching does) and
iteration-level with rounds of N characters (`--generate-chunk N`; the default's N is
serving.settings.GENERATE_CHUNK_CHARS): requests share the model's steps. Beside them, the
ceiling: the same model's `generate` in this process at batch 16 and at batch 1.

Each client sends requests back to back for `--seconds`; reported: the short requests'
p50, characters/s, and failed requests by status. Tutorial-sized GRU 1024, untrained
(speed does not depend on the weights' values).
"""
import argparse
import shutil
import threading
import time
from typing import Dict, List

import numpy as np

from bench import common

PROMPT = "ROMEO:"  # bench/generation.py's

SERVERS = {"off": ["--no-batching"], "request-level": ["--generate-chunk", "0"]}
# scenario → [(clients, what each sends)]; an int is a generate request of that many chars.
# "1000/200": 1,000 characters as `resume` calls of 200 (what a TF Serving client can do).
SCENARIOS = {"short": [(8, 20)], "mixed": [(8, 20), (8, 1000)],
             "mixed, long ones in resume chunks": [(8, 20), (8, "1000/200")],
             "uniform": [(16, 200)], "single": [(1, 200)],
             "bad": [(8, "score"), (1, "malformed")]}


def _example(text: str) -> bytes:
    from serving import protos
    example = protos.example_pb2.Example()
    example.features.feature["text"].bytes_list.value.append(text.encode())
    return example.SerializeToString()


def in_chunks(client, total: int, piece: int, seed: int) -> int:
    """`total` characters as `resume` calls of `piece`, each from the last one's state."""
    states = np.zeros([1, client.state_size()], np.float32)
    prompt, position = PROMPT.encode(), 0
    while position < total:
        n = min(piece, total - position)
        states = client.predict({
            "prompts": np.array([prompt], dtype=object), "states": states,
            "position": np.array([position], np.int32), "num_chars": np.array([n], np.int32),
            "temperature": np.ones([1], np.float32), "seed": np.array([seed], np.int32)},
            "resume").outputs["states"]
        prompt, position = b"", position + n
    return total


def run_scenario(target: str, groups, seconds: float) -> Dict[str, Dict]:
    """Every group's clients at once; per group: requests, p50, chars/s, errors by code."""
    from serving.client import connect
    from serving.errors import ServingError
    kinds = [kind for count, kind in groups for _ in range(count)]
    stats = {str(kind): {"latencies": [], "errors": {}, "chars": 0} for _, kind in groups}
    lock, barrier, stop = threading.Lock(), threading.Barrier(len(kinds) + 1), [0.0]
    good = np.array([_example("To be, or not to be, that is the question:\n")], dtype=object)
    bad = np.array([b"\xff\x01 not an example"], dtype=object)

    def client(index, kind):
        mine, errors, chars = [], {}, 0
        with connect(server=target) as c:
            c.state_size()
            barrier.wait()
            request = 0
            while time.perf_counter() < stop[0]:
                request += 1
                t0 = time.perf_counter()
                try:
                    if isinstance(kind, int):
                        c.generate([PROMPT], kind, temperature=1.0,
                                   seed=index * 100_000 + request)
                        chars += kind
                    elif "/" in kind:
                        chars += in_chunks(c, *map(int, kind.split("/")),
                                           seed=index * 100_000 + request)
                    else:
                        c.predict({"examples": good if kind == "score" else bad}, "score")
                    mine.append(time.perf_counter() - t0)
                except ServingError as err:
                    errors[err.code] = errors.get(err.code, 0) + 1
        with lock:
            s = stats[str(kind)]
            s["latencies"].extend(mine)
            s["chars"] += chars
            for code, n in errors.items():
                s["errors"][code] = s["errors"].get(code, 0) + n

    elapsed = common.run_clients([lambda i=i, kind=kind: client(i, kind)
                                  for i, kind in enumerate(kinds)], barrier, stop, seconds)
    out = {}
    for kind, s in stats.items():
        lat = s["latencies"]
        out[kind] = {"requests": len(lat), "errors": s["errors"],
                     "p50_ms": 1000 * float(np.percentile(lat, 50)) if lat else None,
                     "chars_per_s": s["chars"] / elapsed}
    return out


def in_process(export_dir: str, batch: int, chars: int, repetitions: int) -> float:
    """chars/s of the `generate` signature called here at `batch` rows (median)."""
    import tensorflow as tf
    generate = tf.saved_model.load(f"{export_dir}/1").signatures["generate"]
    args = dict(prompts=tf.constant([PROMPT] * batch), num_chars=tf.fill([batch], chars),
                temperature=tf.ones([batch]), top_k=tf.zeros([batch], tf.int32),
                top_p=tf.ones([batch]), seed=tf.range(1, batch + 1))
    generate(**args)  # trace and allocate
    seconds = [common.timed(lambda: generate(**args)) for _ in range(repetitions)]
    return batch * chars / float(np.median(seconds))


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rnn-units", type=int, default=1024)
    parser.add_argument("--chunks", default="16,32,64",
                        help="the iteration-level servers' --generate-chunk values")
    args = parser.parse_args(argv)
    from bench.generation import build  # TensorFlow: not for the report's import of `section`
    from bench.serving_load import free_port, start_server
    servers = dict(SERVERS)
    for chunk in args.chunks.split(","):
        servers[f"iteration-level, chunk {chunk}"] = ["--generate-chunk", chunk]
    with open(common.SHAKESPEARE, encoding="utf-8") as f:
        vocab = sorted(set(f.read()))
    _, export_dir = build(vocab, args.rnn_units)
    results = {"rnn_units": args.rnn_units, "seconds_per_scenario": args.seconds,
               "servers": {}}
    try:
        results["in_process"] = {"batch16_chars_per_s": in_process(export_dir, 16, 200, 5),
                                 "batch1_chars_per_s": in_process(export_dir, 1, 200, 5)}
        print("in process", results["in_process"], flush=True)
        for name, server_args in servers.items():
            port = free_port()
            server = start_server(export_dir, port, extra_args=server_args)
            try:
                target = f"127.0.0.1:{port}"
                run_scenario(target, [(1, 200)], 3)  # warm-up: first calls trace
                results["servers"][name] = {}
                for scenario, groups in SCENARIOS.items():
                    measured = run_scenario(target, groups, args.seconds)
                    results["servers"][name][scenario] = measured
                    print(name, scenario, measured, flush=True)
            finally:
                server.terminate()
                server.wait(60)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    results["machine"] = common.machine()
    common.save_result("serving_mixed", results)
    return results


def _cell(value, fmt="{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def section(r) -> str:
    """docs/benchmarks.md's section on mixed traffic, from serving_mixed.json."""
    if r is None:
        return "Not measured yet: `.venv/bin/python -m bench.serving_mixed`.\n"
    servers = r["servers"]
    ceiling = r["in_process"]
    rows: List[List[str]] = []

    def total_chars(scenario):
        return sum(g["chars_per_s"] for g in scenario.values())
    for name, s in servers.items():
        alone = s["short"]["20"]["p50_ms"]
        amid = s["mixed"]["20"]["p50_ms"]
        good_failed = sum(s["bad"]["score"]["errors"].values())
        bad_codes = ", ".join(f"{c} {n}" for c, n in s["bad"]["malformed"]["errors"].items())
        chunked = s["mixed, long ones in resume chunks"]["20"]["p50_ms"]
        rows.append([name, _cell(alone), _cell(amid),
                     _cell(amid / alone if alone and amid else None, "{:.1f}×"), _cell(chunked),
                     _cell(total_chars(s["mixed"])), _cell(total_chars(s["uniform"])),
                     _cell(total_chars(s["uniform"]) / ceiling["batch16_chars_per_s"], "{:.0%}"),
                     _cell(total_chars(s["single"]) / ceiling["batch1_chars_per_s"], "{:.0%}"),
                     f"{good_failed} of {s['bad']['score']['requests'] + good_failed}",
                     bad_codes or "-"])
    header = ["server", "8×20 alone: p50 ms", "8×20 amid 8×1,000: p50 ms", "amid / alone",
              "amid 8×1,000 sent as `resume` calls of 200: p50 ms",
              "mixed: chars/s", "16×200: chars/s", "16×200 / in-process batch 16",
              "1×200 / in-process batch 1", "good `score` requests failed", "malformed answered"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return (f"GRU {r['rnn_units']}, {r['seconds_per_scenario']:g} s per scenario, "
            f"`textgen serve` in its own process on loopback "
            f"(`.venv/bin/python -m bench.serving_mixed`). In-process `generate`: "
            f"{ceiling['batch16_chars_per_s']:,.0f} chars/s at batch 16, "
            f"{ceiling['batch1_chars_per_s']:,.0f} at batch 1.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
