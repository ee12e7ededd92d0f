"""Faults and abuse at the server (issue 6): broken pushes, removed versions, limits,
names that try to leave the model base, and the malformed requests fuzzing turned up.

Long on purpose: the cases share the tiny model and module-scoped servers (limited, guarded),
whose start costs more than the cases.
"""
import http.client
import json
import logging
import os
import shutil
import socket
import threading
import time

import grpc
import numpy as np
import pytest

from serving import protos
from serving.client import GrpcClient, RestClient
from serving.errors import ServingError
from serving.settings import Limits
from serving.server import Server
from test_serving_versions import push

STATE_SIZE = 16  # the tiny model: one GRU layer of 16 units


def generate_inputs(rows=1, num_chars=5, prompt=b"ab"):
    return {"prompts": np.array([prompt] * rows, dtype=object),
            "num_chars": np.array(num_chars, np.int32),
            "temperature": np.ones([rows], np.float32)}


def one_step_inputs(rows=1):
    return {"chars": np.array([b"a"] * rows, dtype=object),
            "states": np.zeros([rows, STATE_SIZE], np.float32),
            "temperature": np.ones([rows], np.float32)}


def error_of(call):
    with pytest.raises(ServingError) as caught:
        call()
    return caught.value


def rest_request(server, method, path, body=b"", headers=None):
    """(status, body) of a request sent with the path exactly as given (no normalising)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def model_status(server):
    """{version: (state, error code, message)} from GetModelStatus over REST."""
    status, body = rest_request(server, "GET", "/v1/models/textgen")
    assert status == 200, body
    return {int(entry["version"]): (entry["state"], entry["status"]["error_code"],
                                    entry["status"]["error_message"])
            for entry in json.loads(body)["model_version_status"]}


def limited_server_for(model_dir, **limits):
    """A server of `model_dir` on free loopback ports with these Limits, not polling."""
    return Server(model_dir, port=0, rest_port=0, poll_seconds=0, limits=Limits(**limits),
                  max_message_bytes=1 << 20)


def wait_until(condition, seconds=120):
    """Polls `condition` until it holds; a guard against hanging, not a timing check."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# --- broken pushes ---------------------------------------------------------------------------

def _truncate_graph(path):
    graph = os.path.join(path, "saved_model.pb")
    with open(graph, "r+b") as f:
        f.truncate(os.path.getsize(graph) // 2)


def _empty_graph(path):
    open(os.path.join(path, "saved_model.pb"), "wb").close()


def _remove_variables(path):
    shutil.rmtree(os.path.join(path, "variables"))


def _remove_variables_index(path):
    os.remove(os.path.join(path, "variables", "variables.index"))


def _truncate_variables(path):
    variables = os.path.join(path, "variables")
    for name in os.listdir(variables):
        if name.startswith("variables.data"):
            with open(os.path.join(variables, name), "r+b") as f:
                f.truncate(100)


def _empty_directory(path):
    shutil.rmtree(path)
    os.makedirs(path)


# corruption → (error code GetModelStatus reports, words its message holds)
CORRUPTIONS = {
    "saved_model.pb cut in half": (_truncate_graph, "DATA_LOSS", "not a SavedModel"),
    "saved_model.pb empty": (_empty_graph, "DATA_LOSS", "holds no MetaGraph"),
    "variables/ missing": (_remove_variables, "NOT_FOUND", "cannot load the SavedModel"),
    "variables.index missing": (_remove_variables_index, "NOT_FOUND",
                                "cannot load the SavedModel"),
    "variables data cut short": (_truncate_variables, "DATA_LOSS",
                                 "cannot load the SavedModel"),
    "empty version directory": (_empty_directory, "NOT_FOUND", "cannot read it"),
}


def test_corrupt_new_versions_are_logged_reported_and_the_old_one_keeps_serving(
        tmp_path, tiny_model_dir, caplog):
    base = tmp_path / "models"
    base.mkdir()
    push(base, tiny_model_dir, 1)
    caplog.set_level(logging.ERROR, logger="textgen.serving")
    with Server(str(base), port=0, rest_port=0, poll_seconds=0) as server, \
            GrpcClient(server.grpc_target) as client:
        for version, (corrupt, code, words) in enumerate(CORRUPTIONS.values(), start=2):
            staging = base / f".tmp-{version}"
            shutil.copytree(tiny_model_dir, staging)
            corrupt(str(staging))
            os.rename(staging, base / str(version))
            server.manager.poll()

            assert client.predict(generate_inputs(), "generate").version == 1, version
            state, error_code, message = model_status(server)[version]
            assert (state, error_code) == ("END", code), (version, message)
            assert f"{base / str(version)}" in message and words in message, message
            assert "re-" in message  # says what to do: re-export or re-push
            logged = [r.getMessage() for r in caplog.records
                      if f"version: {version}}} failed" in r.getMessage()]
            assert len(logged) == 1 and "still serving version(s) [1]" in logged[0], logged
        assert model_status(server)[1][0] == "AVAILABLE"


# --- removing what is being served -----------------------------------------------------------

def test_removing_served_versions_never_fails_a_request(tmp_path, tiny_model_dir):
    """rm -rf of the served version: the next one takes over; of the last one: it keeps
    answering from memory; a new push is picked up as usual."""
    base = tmp_path / "models"
    base.mkdir()
    push(base, tiny_model_dir, 1)
    push(base, tiny_model_dir, 2)
    with Server(str(base), port=0, rest_port=0, poll_seconds=0.1) as server, \
            GrpcClient(server.grpc_target) as grpc_client, \
            RestClient(server.rest_url) as rest_client:
        versions, failures, stop = [], [], threading.Event()

        def loop(client, record):
            while not stop.is_set():
                try:
                    result = client.predict(generate_inputs(), "generate")
                    if record:
                        versions.append(result.version)
                except ServingError as err:
                    failures.append(err)

        workers = [threading.Thread(target=loop, args=(grpc_client, True)),
                   threading.Thread(target=loop, args=(rest_client, False))]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: versions and versions[-1] == 2)
            shutil.rmtree(base / "2")
            wait_until(lambda: versions[-1] == 1)
            shutil.rmtree(base / "1")
            polls = server.manager.polls
            wait_until(lambda: server.manager.polls >= polls + 3)
            answered_from_memory = len(versions)
            wait_until(lambda: len(versions) >= answered_from_memory + 3)
            assert set(versions[answered_from_memory:]) == {1}
            push(base, tiny_model_dir, 3)
            wait_until(lambda: versions[-1] == 3)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        statuses = {version: state for version, (state, _, _) in model_status(server).items()}

    assert not failures
    runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
    assert runs == [2, 1, 3]  # never back to a removed version
    assert statuses == {3: "AVAILABLE", 2: "END", 1: "END"}


# --- limits ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_server(tiny_serving_dir):
    with limited_server_for(tiny_serving_dir, max_batch_chars=5_000) as running:
        yield running


@pytest.fixture(scope="module")
def clients(limited_server):
    with GrpcClient(limited_server.grpc_target) as grpc_client, \
            RestClient(limited_server.rest_url) as rest_client:
        yield {"grpc": grpc_client, "rest": rest_client}


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_rows_times_characters_is_capped(clients, protocol):
    client = clients[protocol]
    # 2 rows × (2 prompt characters + 2000) = 4004: within the cap of 5000.
    assert len(client.predict(generate_inputs(rows=2, num_chars=2000), "generate")
               .outputs["completion"]) == 2
    error = error_of(lambda: client.predict(generate_inputs(rows=3, num_chars=2000),
                                            "generate"))
    assert error.code == "INVALID_ARGUMENT"
    assert "3 rows × (2 characters in the longest row + num_chars 2000) = 6006" in error.message
    assert "--max-batch-chars" in error.message
    # The prompt counts in characters, not bytes: 2 × (1000 × "語" + 1500) = 5000 passes.
    long_prompt = ("語" * 1000).encode()
    assert client.predict(generate_inputs(rows=2, num_chars=1500, prompt=long_prompt),
                          "generate").outputs["completion"].shape == (2,)
    # The one-step signature steps once per character of `chars`.
    error = error_of(lambda: client.predict(one_step_inputs(rows=5001)))
    assert error.code == "INVALID_ARGUMENT" and "chars has 5001 rows" in error.message


def test_a_small_proto_describing_a_huge_tensor_is_refused(limited_server):
    """TensorProto fills a shape by repeating its last value: a few bytes could otherwise
    make the server allocate terabytes."""
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(limited_server.grpc_target))
    for dtype, shape, field in [(protos.types_pb2.DT_FLOAT, [1 << 40], "float_val"),
                                (protos.types_pb2.DT_STRING, [1 << 31], None),
                                (protos.types_pb2.DT_FLOAT, [1 << 62, 8], "float_val")]:
        request = protos.predict_pb2.PredictRequest()
        request.model_spec.name = "textgen"
        tensor = request.inputs["states"]
        tensor.dtype = dtype
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        if field:
            getattr(tensor, field).append(1.0)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, shape
        assert "more than this server accepts" in caught.value.details()


def long_generation_server(model_dir, request_timeout):
    """Allows LONG_REQUEST: 200,000 sequential steps at batch 64, about 30 s of work here
    (10,000 steps took 1-2 s, once finishing inside a 1 s timeout), so the timeouts below
    always cut it short."""
    return limited_server_for(model_dir, max_num_chars=LONG_CHARS,
                              max_batch_chars=64 * (LONG_CHARS + 100),
                              request_timeout=request_timeout)


LONG_CHARS = 200_000
LONG_REQUEST = generate_inputs(rows=64, num_chars=LONG_CHARS)


def request_counts(server):
    """{status: count} of Predict requests from the server's Prometheus metrics."""
    status, body = rest_request(server, "GET", "/monitoring/prometheus/metrics")
    counts = {}
    for line in body.decode().splitlines():
        if line.startswith(":tensorflow:serving:request_count{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('status="')[1].split('"')[0]] = int(float(value))
    return counts


def test_requests_running_past_the_timeout_are_cancelled(tiny_serving_dir):
    with long_generation_server(tiny_serving_dir, request_timeout=1) as server, \
            GrpcClient(server.grpc_target) as grpc_client, \
            RestClient(server.rest_url) as rest_client:
        for client in (grpc_client, rest_client):
            error = error_of(lambda: client.predict(LONG_REQUEST, "generate"))
            assert error.code == "DEADLINE_EXCEEDED", error
            assert "longer than 1 s" in error.message and "--request-timeout" in error.message
            assert client.predict(one_step_inputs()).outputs["next_chars"].shape == (1,)
        assert request_counts(server) == {"DEADLINE_EXCEEDED": 2, "OK": 2}


def test_a_grpc_client_deadline_cancels_the_work_on_the_server(tiny_serving_dir):
    with long_generation_server(tiny_serving_dir, request_timeout=300) as server:
        with GrpcClient(server.grpc_target, timeout=0.2) as client:
            assert error_of(lambda: client.predict(LONG_REQUEST, "generate")).code == \
                "DEADLINE_EXCEEDED"
        # Had the model run on, the request would end later as OK, not CANCELLED.
        wait_until(lambda: request_counts(server) == {"CANCELLED": 1})


# --- names that try to reach outside the model base ------------------------------------------

@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory, tiny_model_dir):
    """A model base with a servable SavedModel beside it, where `..` would lead."""
    root = tmp_path_factory.mktemp("escape")
    for where in ("models/1", "outside/1", "models/textgen/1"):
        shutil.copytree(tiny_model_dir, root / where)
    with Server(str(root / "models"), port=0, rest_port=0, poll_seconds=0) as running:
        yield running


ESCAPING_NAMES = ["../outside", "..", "/", "/etc/passwd", "textgen/../textgen",
                  "./textgen", "textgen/1", "..\\outside", "%2e%2e%2foutside", "textgen\x00",
                  "textgen/", " textgen", "TEXTGEN", ""]


def only_the_model_base_was_read(server):
    """Nothing but <base>/1 was ever loaded (not outside/1, not models/textgen/1)."""
    statuses = {(s.version, s.state) for s in server.manager.status("textgen")}
    metrics = rest_request(server, "GET", "/monitoring/prometheus/metrics")[1].decode()
    paths = {line.split('model_path="')[1].split('"')[0] for line in metrics.splitlines()
             if line.startswith(":tensorflow:cc:saved_model:load_attempt_count{")}
    return statuses == {(1, "AVAILABLE")} and paths == {os.path.join(server.model_dir, "1")}


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_grpc_model_names_only_match_the_served_name(guarded_server, name):
    with GrpcClient(guarded_server.grpc_target, model_name=name) as client:
        error = error_of(lambda: client.predict(generate_inputs(), "generate"))
        assert error.code == "NOT_FOUND"
        assert error.message == f"Servable not found for request: Latest({name})"
        assert error_of(client.signature_defs).code == "NOT_FOUND"
    assert only_the_model_base_was_read(guarded_server)


def test_grpc_versions_are_numbers_of_loaded_versions_only(guarded_server):
    for version in (-1, 0, 2, 1 << 62):
        with GrpcClient(guarded_server.grpc_target, version=version) as client:
            assert error_of(lambda: client.predict(generate_inputs(), "generate")).code == \
                "NOT_FOUND"
    assert only_the_model_base_was_read(guarded_server)


@pytest.mark.parametrize("path", [
    "/v1/models/..%2foutside:predict", "/v1/models/%2e%2e%2foutside:predict",
    "/v1/models/%2E%2E/versions/1:predict", "/v1/models/%2Fetc%2Fpasswd:predict",
    "/v1/models/textgen/../../outside:predict", "/v1/models/textgen/versions/..%2f1:predict",
    "/v1/models/textgen/versions/-1:predict", "/v1/models/textgen/versions/1/..:predict",
    "/v1/models/textgen%00:predict", "/v1/models/textgen%2f1:predict",
    "/v1/models/%252e%252e%252foutside:predict", "/v1/models/..%5coutside:predict",
    "/v1/models/textgen/labels/..%2f..:predict", "/v1/models//etc/passwd:predict",
    "/v1/../v1/models/textgen:predict", "/v1/models/textgen:predict/../../outside",
    "/v1/models/%ff%fe:predict",
])
def test_rest_paths_cannot_name_anything_outside_the_model_base(guarded_server, path):
    body = json.dumps({"signature_name": "generate", "inputs": {
        "prompts": ["ab"], "num_chars": 5, "temperature": [1.0]}}).encode()
    status, answer = rest_request(guarded_server, "POST", path, body)
    assert status in (400, 404), (status, answer)
    assert "error" in json.loads(answer)
    # The same holds for metadata and status requests.
    get_path = path.removesuffix(":predict")
    for suffix in ("", "/metadata"):
        assert rest_request(guarded_server, "GET", get_path + suffix)[0] in (400, 404)
    assert only_the_model_base_was_read(guarded_server)


# --- malformed requests found by fuzzing (tests/test_reliability_fuzz.py) --------------------

def test_grpc_bytes_that_do_not_parse_are_invalid_argument(limited_server):
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = "textgen"
    not_utf8 = request.SerializeToString().replace(b"textgen", b"text\xffen")
    with grpc.insecure_channel(limited_server.grpc_target) as channel:
        raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        for payload in (not_utf8, b"\xff\xff\xff\xff", b"\x0a\x80"):
            with pytest.raises(grpc.RpcError) as caught:
                raw_predict(payload, timeout=60)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
            assert "does not parse as a protobuf message" in caught.value.details()
    assert request_counts(limited_server).get("INTERNAL", 0) == 0


def nested(value, depth):
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("body, headers, status, words", [
    (b"[" * 100_000, {}, 400, "nested too deeply"),
    (json.dumps({"signature_name": "generate", "inputs": {"prompts": nested("a", 40)}}).encode(),
     {}, 400, "nested more than 32 deep"),
    (b'{"signature_name": "generate", "inputs": {"prompts": ["a"], "num_chars": 1'
     + b"0" * 400 + b', "temperature": [1e999999]}}', {}, 400, "is not of expected type: int32"),
    (json.dumps({"signature_name": "generate", "inputs": {
        "prompts": ["a"], "num_chars": 5, "temperature": [10 ** 400]}}).encode(), {}, 400,
     "without loss of precision"),
    (b"{}", {"Content-Length": "\xb2"}, 400, "is not a number of bytes"),
])
def test_rest_bodies_that_once_caused_500s_are_client_errors(limited_server, body, headers,
                                                             status, words):
    answer_status, answer = rest_request(limited_server, "POST", "/v1/models/textgen:predict",
                                         body, headers)
    assert answer_status == status, answer
    assert words in json.loads(answer)["error"]


def test_a_body_shorter_than_its_content_length_is_a_client_error(limited_server):
    with socket.create_connection(("127.0.0.1", limited_server.rest_port), timeout=60) as sock:
        sock.sendall(b"POST /v1/models/textgen:predict HTTP/1.0\r\nContent-Length: 100\r\n\r\n{}")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400"), head
    assert "ended after 2 of the 100 bytes" in json.loads(body)["error"]


