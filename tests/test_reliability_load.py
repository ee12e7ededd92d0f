"""Load on loopback (issue 6): 16 clients for 30 s against `textgen serve` in its own
process (batching on, its default), half gRPC and half REST, sending generate requests of
mixed lengths and one-step calls, while two new versions (other weights) are pushed the
Pusher's way. No request may fail; every answer is the greedy answer of one version, the
one gRPC names (REST answers name none: there the text tells), and no client goes back to
an older version. The server's memory growth is printed and bounded."""
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from conftest import export_tiny_model
from serving.client import GrpcClient, InProcessClient, RestClient
from serving.errors import ServingError
from test_serving_versions import push

DURATION = 30.0
# Seconds into the run: versions 2 and 3. Loading while 16 clients keep two CPUs busy
# takes 15-25 s, so version 3 may arrive after the clients stop; the test waits for it.
PUSH_AT = (4.0, 8.0)
CLIENTS_PER_PROTOCOL = 8
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on count as well as on time
# A client keeps going past DURATION until it has had an answer from a pushed version.
MAX_SECONDS = 150.0
STATE_SIZE = 16  # the tiny model
RSS_GROWTH_BOUND_MB = 500


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


TEXTGEN = os.path.join(os.path.dirname(sys.executable), "textgen")


class ServeProcess:
    """`textgen serve` on free loopback ports; its log lines are collected as they come."""

    def __init__(self, model_dir, textgen=TEXTGEN, cwd=None):
        self.process = subprocess.Popen(
            [textgen, "serve", "--model-dir", model_dir, "--host", "127.0.0.1", "--port", "0",
             "--rest-port", "0", "--poll-seconds", "0.5"],
            stderr=subprocess.PIPE, text=True, errors="replace", cwd=cwd)
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stderr],
                         daemon=True).start()
        self.log = []
        while not any("Ctrl-C stops" in line for line in self.log):
            try:
                self.log.append(self.lines.get(timeout=300))  # it imports TensorFlow first
            except queue.Empty:
                raise AssertionError("textgen serve did not start:\n" + "".join(self.log))
        banner = self.log[-1]
        self.grpc_target = re.search(r"gRPC (127\.0\.0\.1:\d+)", banner).group(1)
        self.rest_url = re.search(r"REST (http://127\.0\.0\.1:\d+)", banner).group(1)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return code


# Kinds of request a client sends in turn (step % KINDS).
KINDS = 4


def requests_for(step):
    """A short generate call, a one-step call, a long generate call (mixed lengths share
    the server's generation steps), a one-step call; all greedy (temperature 0): each
    version has one right answer."""
    if step % 2:
        return {"chars": np.array([b"ab"], dtype=object),
                "states": np.zeros([1, STATE_SIZE], np.float32),
                "temperature": np.zeros([1], np.float32)}, "serving_default"
    return {"prompts": np.array([b"ROMEO:", b"a"], dtype=object),
            "num_chars": np.array(20 if step % KINDS == 0 else 400, np.int32),
            "temperature": np.zeros([2], np.float32)}, "generate"


def answer(outputs):
    """What identifies an answer: the generated text (or next characters)."""
    return tuple(outputs["text"] if "text" in outputs else outputs["next_chars"])


def test_sixteen_clients_under_load_with_two_pushes_lose_nothing(tmp_path):
    # Three models with other weights, versions 1-3; their greedy answers, computed here.
    models, expected = {}, {}
    for version in (1, 2, 3):
        models[version] = str(tmp_path / f"model{version}")
        export_tiny_model(models[version], seed=version)
        with InProcessClient(models[version]) as client:
            expected[version] = {step: answer(client.predict(*requests_for(step)).outputs)
                                 for step in range(KINDS)}
    for step in range(KINDS):
        assert len({expected[v][step] for v in models}) == 3, "versions answer alike"
    base = tmp_path / "serving"
    base.mkdir()
    push(base, models[1], 1)
    server = ServeProcess(str(base))
    pid = server.process.pid
    counts, failures, versions_seen, wrong = {}, [], {}, []
    started = time.monotonic()
    stop_at = started + DURATION

    def client_loop(name, client):
        done, newest = 0, 1
        with client:
            while ((time.monotonic() < stop_at or newest < 2) and done < MAX_REQUESTS_PER_CLIENT
                   and time.monotonic() < started + MAX_SECONDS):
                inputs, signature = requests_for(done)
                try:
                    result = client.predict(inputs, signature)
                except ServingError as err:
                    failures.append((name, round(time.monotonic() - started, 1), err))
                else:
                    got = answer(result.outputs)
                    by_text = [v for v in expected if expected[v][done % KINDS] == got]
                    if not by_text or result.version not in (None, by_text[0]):
                        wrong.append((name, result.version, got))
                    else:
                        versions_seen.setdefault(name, []).append(by_text[0])
                        newest = max(newest, by_text[0])
                done += 1
        counts[name] = done

    clients = {f"grpc-{i}": GrpcClient(server.grpc_target, timeout=60)
               for i in range(CLIENTS_PER_PROTOCOL)}
    clients.update({f"rest-{i}": RestClient(server.rest_url, timeout=60)
                    for i in range(CLIENTS_PER_PROTOCOL)})
    threads = [threading.Thread(target=client_loop, args=item) for item in clients.items()]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3)  # past the first calls: the baseline is the server under load
        rss = {"start": rss_mb(pid)}
        peak = rss["start"]
        for version, at in enumerate(PUSH_AT, start=2):
            while time.monotonic() < started + at:
                time.sleep(1)
                peak = max(peak, rss_mb(pid))
            push(base, models[version], version)
        while any(thread.is_alive() for thread in threads):
            time.sleep(1)
            peak = max(peak, rss_mb(pid))
        rss["end"] = rss_mb(pid)
        # Loading under full load can outlast the run: give the last push time to arrive.
        with GrpcClient(server.grpc_target, timeout=60) as client:
            deadline = time.monotonic() + 180
            while client.predict(*requests_for(0)).version != 3:
                assert time.monotonic() < deadline, "version 3 was never served"
                time.sleep(0.5)
    finally:
        for thread in threads:
            thread.join()
        exit_code = server.stop()

    total = sum(counts.values())
    growth = rss["end"] - rss["start"]
    print(f"\nload: {len(clients)} clients × {DURATION:g} s: {total} requests "
          f"({sum(v for k, v in counts.items() if k.startswith('grpc'))} gRPC, "
          f"{sum(v for k, v in counts.items() if k.startswith('rest'))} REST), "
          f"{len(failures)} failed; server RSS {rss['start']:.0f} MB → {rss['end']:.0f} MB "
          f"(growth {growth:+.0f} MB, peak {peak:.0f} MB)")
    print("per client:", dict(sorted(counts.items())))
    assert not failures, failures[:5]
    assert not wrong, wrong[:5]
    assert exit_code == 0, "".join(server.log[-20:])
    assert all(counts[name] > 0 for name in clients), counts
    for name in clients:
        versions = versions_seen[name]
        assert versions == sorted(versions), f"{name} went back to an older version"
        assert versions[0] == 1 and versions[-1] >= 2, (name, versions[0], versions[-1])
    print("versions answered:", {v: sum(vs.count(v) for vs in versions_seen.values())
                                 for v in (1, 2, 3)})
    print("".join(line for line in server.log if "servable version" in line))
    assert growth < RSS_GROWTH_BOUND_MB, f"server RSS grew {growth:.0f} MB"
