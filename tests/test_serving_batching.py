"""`textgen serve --enable_batching`: concurrent requests share model calls, each still
gets exactly its own answer; the parameters are TF Serving's, read from its file format.
`generate` is merged here request by request (`--generate-chunk 0`, TF Serving's way);
its default, steps shared between requests, is tests/test_serving_stepping.py's."""
import argparse
import contextlib
import json
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving import settings
from serving.client import GrpcClient
from serving.deadlines import CancelToken
from serving.errors import ServingError
from serving.servable import Servable
from serving.server import Server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_SIZE = 16  # the tiny model


def batching(**changes):
    values = dict(max_batch_size=32, batch_timeout_micros=50_000, num_batch_threads=1,
                  max_enqueued_batches=8)
    values.update(changes)
    return settings.BatchingParameters(**values)


# Whole `generate` requests merged, as TF Serving merges them.
REQUEST_LEVEL = 0


@pytest.fixture(scope="module")
def batched_server(tiny_serving_dir):
    with Server(tiny_serving_dir, port=0, rest_port=0, poll_seconds=0,
                batching=batching(), generate_chunk=REQUEST_LEVEL) as running:
        yield running


def batcher_of(server):
    with server.manager.acquire("textgen") as servable:
        return servable.batcher


def concurrently(calls):
    """Runs the calls at once (a barrier releases them together); their results in order."""
    results, errors = [None] * len(calls), []
    barrier = threading.Barrier(len(calls))

    def run(index):
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_seeded_requests_give_the_same_text_alone_and_merged(batched_server):
    """16 concurrent clients, each its own prompt, length, temperature and seed: every one
    gets byte for byte what it gets alone, and the server merged them into fewer calls."""
    requests = [(["ab", "hé", "c:", "dd"][i % 4], 10 + 3 * i, 0.5 + 0.1 * i, 1000 + i)
                for i in range(16)]
    with GrpcClient(batched_server.grpc_target) as client:
        alone = [client.generate([prompt], n, t, seed=seed)[0]
                 for prompt, n, t, seed in requests]
    batcher = batcher_of(batched_server)
    before = (batcher.batches, batcher.batched_requests)

    def call(prompt, n, t, seed):
        with GrpcClient(batched_server.grpc_target) as client:
            return client.generate([prompt], n, t, seed=seed)[0]
    merged = concurrently([lambda r=r: call(*r) for r in requests])
    assert merged == alone
    # Mixed num_chars in one batch: each row ends at exactly its own length.
    assert [len(text) for text in merged] == [len(p) + n for p, n, _, _ in requests]
    batches = batcher.batches - before[0]
    assert batcher.batched_requests - before[1] == 16
    assert batches < 16, "no two requests shared a model call"


def test_concurrent_streams_are_merged_step_by_step(batched_server):
    seeds = list(range(21, 29))
    with GrpcClient(batched_server.grpc_target) as client:
        alone = ["".join(client.stream("ROMEO:", 30, 0.9, seed)) for seed in seeds]
    batcher = batcher_of(batched_server)
    before = (batcher.batches, batcher.batched_requests)

    def stream(seed):
        with GrpcClient(batched_server.grpc_target) as client:
            return "".join(client.stream("ROMEO:", 30, 0.9, seed))
    assert concurrently([lambda s=s: stream(s) for s in seeds]) == alone
    assert batcher.batched_requests - before[1] == 8 * 30
    assert batcher.batches - before[0] < 8 * 30


def test_a_batch_can_hold_more_requests_than_tf_servings_default_threads(
        tiny_serving_dir, monkeypatch):
    """A request waits in its batch on its request thread. With TF Serving's 4 threads per
    CPU on one CPU no batch could hold more than 4 requests; the default adds a batch's worth."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    endless = 10_000_000  # characters: longer than the test, until its client goes
    with Server(tiny_serving_dir, port=0, rest_port=None, poll_seconds=0,
                batching=batching(max_batch_size=16), generate_chunk=REQUEST_LEVEL,
                limits=settings.Limits(max_num_chars=endless, max_batch_chars=endless * 2,
                                       request_timeout=3600.0)) as running:
        batcher = batcher_of(running)
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(GrpcClient(running.grpc_target)) for _ in range(12)]
            for client in clients:
                client.state_size()  # connected, signatures fetched: the calls below only predict
            # One request too long to end by itself holds the model; the other eleven must all
            # be taken in (each on its own request thread) and wait for the next batch.
            blocker, others = clients[0], clients[1:]
            blocked = []

            def block():
                with pytest.raises(ServingError) as caught:
                    blocker.generate(["ab"], endless, 1.0)
                blocked.append(caught.value.code)
            holder = threading.Thread(target=block)
            holder.start()
            _wait_until(lambda: batcher.pending().get("generate") == (0, 1))
            waiters = [threading.Thread(target=lambda c=c, i=i: c.generate(
                ["ab"], 20, 1.0, seed=i + 1)) for i, c in enumerate(others)]
            for waiter in waiters:
                waiter.start()
            _wait_until(lambda: batcher.pending().get("generate") == (len(others), 1))
            blocker.close()  # the client goes: its call is cancelled and the model is free
            holder.join()
            for waiter in waiters:
                waiter.join()
        assert blocked == ["CANCELLED"]
        assert batcher.largest_batch == len(others)


def test_a_full_queue_answers_unavailable_at_once(tiny_serving_dir):
    """One long request runs, one waits (max_enqueued_batches=1 of max_batch_size=1 row):
    the next is refused with UNAVAILABLE over gRPC and 503 over REST, not queued."""
    long_request = (["ab"], 10_000, 1.0)
    with Server(tiny_serving_dir, port=0, rest_port=0, poll_seconds=0, batching=batching(
            max_batch_size=1, max_enqueued_batches=1, batch_timeout_micros=0),
            generate_chunk=REQUEST_LEVEL) as server, \
            GrpcClient(server.grpc_target) as client:
        batcher = batcher_of(server)
        waiting = []
        threads = []
        for expected_running, expected_queued in ((1, 0), (1, 1)):
            threads.append(threading.Thread(target=lambda: waiting.append(
                client.generate(*long_request)[0])))
            threads[-1].start()
            _wait_until(lambda: batcher.pending().get("generate") == (expected_queued,
                                                                       expected_running))
        with pytest.raises(ServingError) as caught:
            client.generate(["ab"], 5, 1.0)
        assert caught.value.code == "UNAVAILABLE" and "max_enqueued_batches" in \
            caught.value.message
        body = json.dumps({"signature_name": "generate", "inputs": {
            "prompts": ["ab"], "num_chars": [5], "temperature": [1.0]}}).encode()
        with pytest.raises(urllib.error.HTTPError) as http_error:
            urllib.request.urlopen(urllib.request.Request(
                server.rest_url + "/v1/models/textgen:predict", data=body), timeout=60)
        assert http_error.value.code == 503
        for thread in threads:
            thread.join()
        assert [len(text) for text in waiting] == [2 + 10_000] * 2  # the queued ones finish


def test_a_request_with_more_rows_than_max_batch_size_is_refused(tiny_serving_dir):
    with Server(tiny_serving_dir, port=0, rest_port=None, poll_seconds=0,
                batching=batching(max_batch_size=2)) as server, \
            GrpcClient(server.grpc_target) as client:
        with pytest.raises(ServingError) as caught:
            client.generate(["a", "b", "c"], 5)
        assert caught.value.code == "INVALID_ARGUMENT" and "max_batch_size" in \
            caught.value.message


def test_one_requests_timeout_does_not_cancel_a_concurrent_one(tiny_model_dir):
    """Each request thread cancels only its own TensorFlow call (serving/tf_cancellation)."""
    servable = Servable(tiny_model_dir, 1)
    inputs = {"prompts": np.array([b"ab"] * 8, dtype=object),
              "num_chars": np.array([20_000], np.int32), "temperature": np.ones([8], np.float32)}
    cancelled, finished = CancelToken(), []
    started = threading.Event()
    errors = []

    def survivor():
        started.set()
        finished.append(servable.predict("generate", inputs, limits=settings.Limits(
            max_num_chars=20_000, max_batch_chars=1_000_000))[1]["completion"])

    def victim():
        try:
            servable.predict("generate", inputs, limits=settings.Limits(
                max_num_chars=20_000, max_batch_chars=1_000_000), cancel=cancelled)
        except ServingError as err:
            errors.append(err.code)
    threads = [threading.Thread(target=survivor), threading.Thread(target=victim)]
    threads[0].start()
    started.wait()
    threads[1].start()
    _wait_until(lambda: threads[1].is_alive())
    cancelled.cancel("DEADLINE_EXCEEDED", "this request's own timeout")
    for thread in threads:
        thread.join()
    assert errors == ["DEADLINE_EXCEEDED"]
    assert [len(text.decode()) for text in finished[0]] == [20_000] * 8


def test_batching_parameters_are_read_from_tf_servings_file(tmp_path):
    parameters, ignored = settings.read_batching_parameters(
        os.path.join(REPO, "deploy", "config", "batching.config"))
    assert parameters.max_batch_size >= 16 and parameters.num_batch_threads >= 1
    assert ignored == ()
    config = tmp_path / "batching.config"
    config.write_text("max_batch_size { value: 4 }\nallowed_batch_sizes: 4\n"
                      "pad_variable_length_inputs: true\n")
    parameters, ignored = settings.read_batching_parameters(str(config))
    assert parameters == settings.BatchingParameters(max_batch_size=4)
    assert ignored == ("allowed_batch_sizes", "pad_variable_length_inputs")
    config.write_text("max_batch_size { value: 4 }\nmax_batch_sise { value: 4 }\n")
    with pytest.raises(ValueError, match="max_batch_sise"):
        settings.read_batching_parameters(str(config))
    config.write_text("num_batch_threads { value: 0 }\n")
    with pytest.raises(ValueError, match="num_batch_threads is 0"):
        settings.read_batching_parameters(str(config))


def _wait_until(condition, seconds=120):
    """A guard against hanging, not a timing check."""
    import time
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- One bad request fails only itself ---------------------------------------------------

class _HeldBatcher:
    """A Batcher (one thread) over a stand-in model call `compute(x) -> y`. A first request
    holds the thread until every request of a group is queued, so that the group then runs
    as one merged call, whatever the timing."""

    def __init__(self, compute, max_batch_size):
        from serving.batching import Batcher
        self.calls, self.release = [], threading.Event()
        self.started = threading.Event()

        def run(signature, feeds, cancel):
            self.calls.append([int(v) for v in feeds["x"]])
            if self.calls[-1] == [HOLD]:
                self.started.set()
                self.release.wait(60)
            return {"y": compute(feeds["x"])}
        self.batcher = Batcher(batching(max_batch_size=max_batch_size, num_batch_threads=1),
                               run)
        self.holder = threading.Thread(target=self.submit, args=(HOLD,))
        self.holder.start()
        self.started.wait(60)

    def submit(self, value, cancel=None):
        try:
            return int(self.batcher.submit("f", {"x": np.array([value])}, 1,
                                           cancel or CancelToken())["y"][0])
        except ServingError as err:
            return err

    def merged(self, values, tokens=None):
        """Queues one single-row request per value, then lets them run; their threads."""
        answers = [None] * len(values)
        tokens = tokens or [CancelToken() for _ in values]

        def call(i):
            answers[i] = self.submit(values[i], tokens[i])
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(values))]
        for thread in threads:
            thread.start()
        _wait_until(lambda: self.batcher.pending().get("f") == (len(values), 1))
        self.release.set()
        return answers, threads


HOLD = -1000  # the holding request's value


def test_a_failing_merged_call_answers_only_the_bad_request_with_its_error():
    def compute(x):
        if (x < 0).any() and HOLD not in x:
            raise ServingError("INVALID_ARGUMENT", "x must be >= 0")
        return x * 2
    held = _HeldBatcher(compute, max_batch_size=8)
    try:
        answers, threads = held.merged([1, 2, -3, 4, 5, 6, 7, 8])
        for thread in threads + [held.holder]:
            thread.join(60)
    finally:
        held.batcher.close()
    assert held.calls[1] == [1, 2, -3, 4, 5, 6, 7, 8]  # merged
    assert held.calls[2:] == [[1], [2], [-3], [4], [5], [6], [7], [8]]  # then each alone
    assert held.batcher.split_batches == 1
    assert answers[:2] + answers[3:] == [2, 4, 8, 10, 12, 14, 16]
    assert (answers[2].code, answers[2].message) == ("INVALID_ARGUMENT", "x must be >= 0")


def test_a_request_cancelled_inside_a_merged_call_leaves_the_others_their_answers():
    inside, finish = threading.Event(), threading.Event()

    def compute(x):
        if HOLD not in x:
            inside.set()
            finish.wait(60)
        return x + 1
    held = _HeldBatcher(compute, max_batch_size=3)
    tokens = [CancelToken() for _ in range(3)]
    try:
        answers, threads = held.merged([0, 1, 2], tokens)
        inside.wait(60)
        tokens[1].cancel("CANCELLED", "the client went away")
        threads[1].join(60)
        # At once, while the merged call still runs; the others still wait for it.
        assert answers[1].code == "CANCELLED" and answers[0] is None and answers[2] is None
        finish.set()
        for thread in threads + [held.holder]:
            thread.join(60)
    finally:
        finish.set()
        held.batcher.close()
    assert held.calls[1] == [0, 1, 2]
    assert answers[0] == 1 and answers[2] == 3
    assert held.batcher.split_batches == 0


def test_close_answers_the_waiting_requests_unavailable():
    held = _HeldBatcher(lambda x: x, max_batch_size=1)
    answers = [None] * 2

    def call(i):
        answers[i] = held.submit(i)
    waiting = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in waiting:
        thread.start()
    _wait_until(lambda: held.batcher.pending().get("f") == (2, 1))
    closer = threading.Thread(target=held.batcher.close)
    closer.start()
    for thread in waiting:
        thread.join(60)
    # Before the running call ends: what waits is answered at once.
    assert [a.code for a in answers] == ["UNAVAILABLE"] * 2
    assert held.holder.is_alive()
    held.release.set()
    for thread in (held.holder, closer):
        thread.join(60)
    assert held.calls == [[HOLD]]
    caught = held.submit(9)
    assert caught.code == "UNAVAILABLE"


def test_good_clients_never_see_a_bad_ones_error_over_grpc(batched_server):
    """8 clients score good examples while a 9th sends one that does not parse and, merged
    among them, a prompt only the graph refuses (past its longest-prompt bound): the bad
    ones get INVALID_ARGUMENT naming their input, every good request its own answer."""
    from models.export import MAX_PROMPT_CHARS
    from serving import protos
    example = protos.example_pb2.Example()
    example.features.feature["text"].bytes_list.value.append("abc defg\n".encode())
    good = np.array([example.SerializeToString()], dtype=object)
    with GrpcClient(batched_server.grpc_target) as client:
        expected = client.predict({"examples": good}, "score").outputs["nll"][0]
    batcher = batcher_of(batched_server)
    before = batcher.split_batches

    def good_calls(signature, inputs, read):
        def call():
            with GrpcClient(batched_server.grpc_target) as client:
                return [read(client.predict(inputs, signature).outputs) for _ in range(5)]
        return [call] * 8

    def bad(signature, inputs):
        def call():
            with GrpcClient(batched_server.grpc_target) as client:
                try:
                    client.predict(inputs, signature)
                except ServingError as err:
                    return err
        return call
    results = concurrently(good_calls("score", {"examples": good}, lambda o: o["nll"][0])
                           + [bad("score", {"examples": np.array([b"\xff\x01"], dtype=object)})])
    assert all(r == [pytest.approx(expected)] * 5 for r in results[:8]), results
    assert results[8].code == "INVALID_ARGUMENT" and "examples row 0" in results[8].message

    long_prompt = "a" * (MAX_PROMPT_CHARS + 1)
    generate = {"prompts": np.array([b"ab"], dtype=object), "num_chars": np.array([8], np.int32),
                "temperature": np.zeros([1], np.float32)}
    with GrpcClient(batched_server.grpc_target) as client:
        greedy = client.predict(generate, "generate").outputs["text"][0]
    results = concurrently(
        good_calls("generate", generate, lambda o: o["text"][0])
        + [bad("generate", {**generate, "prompts": np.array([long_prompt.encode()], dtype=object),
                            "num_chars": np.array([0], np.int32)})])
    assert all(r == [greedy] * 5 for r in results[:8]), results
    assert results[8].code == "INVALID_ARGUMENT" and "longer than" in results[8].message
    # Whether the bad request landed in a merged call here depends on timing; that a merged
    # call failing runs apart is pinned by the held batcher's test above.
    assert batcher.split_batches >= before


def test_serve_batches_by_default_with_the_shipped_parameters(tiny_serving_dir):
    """On unless turned off (TF Serving's own server defaults to off), with the parameters
    of deploy/config/batching.config when no file is named."""
    from serving import cli as serving_cli
    parser = argparse.ArgumentParser()
    serving_cli.add_parsers(parser.add_subparsers(dest="command"))

    def batching_of(*flags):
        args = parser.parse_args(["serve", "--model-dir", tiny_serving_dir, *flags])
        serving_cli._check_serve_args(args)
        return serving_cli._batching_parameters(args)
    shipped, _ = settings.read_batching_parameters(
        os.path.join(REPO, "deploy", "config", "batching.config"))
    assert settings.SERVE_BATCHING == shipped
    assert batching_of() == shipped
    assert batching_of("--enable_batching") == shipped
    assert batching_of("--enable_batching=true") == shipped
    assert batching_of("--no-batching") is None
    assert batching_of("--enable_batching=false") is None
    with pytest.raises(serving_cli.CliError, match="needs batching on"):
        batching_of("--no-batching", "--batching_parameters_file", "x.config")
