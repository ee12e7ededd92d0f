"""The local server speaks TF Serving's protocol: called with the real PredictionServiceStub
(requests built with tf.make_tensor_proto, as TF Serving clients do) and with plain HTTP.

Long on purpose: one module-scoped server and model serve every protocol case, and loading
them costs more than all the cases together."""
import base64
import json
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving import protos
from serving.server import Server

STATE_SIZE = 16  # the tiny model: one GRU layer of 16 units
MAX_MESSAGE_BYTES = 1 << 16


@pytest.fixture(scope="module")
def server(tiny_serving_dir):
    with Server(tiny_serving_dir, port=0, rest_port=0, poll_seconds=0,
                max_message_bytes=MAX_MESSAGE_BYTES) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as open_channel:
        yield open_channel


@pytest.fixture(scope="module")
def predict(channel):
    return protos.prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The SavedModel's signatures called directly with TensorFlow: no serving code."""
    import tensorflow as tf
    return tf.saved_model.load(tiny_model_dir).signatures


def tf_call(function, inputs):
    import tensorflow as tf
    outputs = function(**{alias: tf.constant(value) for alias, value in inputs.items()})
    return {alias: value.numpy() for alias, value in outputs.items()}


def request_for(signature, inputs, name="textgen", version=None, label=None, output_filter=()):
    import tensorflow as tf
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def outputs_of(response):
    import tensorflow as tf
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def one_step_inputs(**changes):
    inputs = {"chars": np.array([b"ab"]), "states": np.zeros([1, STATE_SIZE], np.float32),
              "temperature": np.array([1.0], np.float32)}
    inputs.update(changes)
    return {k: v for k, v in inputs.items() if v is not None}


def generate_inputs(**changes):
    inputs = {"prompts": np.array([b"ab"]), "num_chars": np.int32(5),
              "temperature": np.array([1.0], np.float32)}
    inputs.update(changes)
    return {k: v for k, v in inputs.items() if v is not None}


# --- results equal the model's own ----------------------------------------------------------

def test_one_step_calls_carrying_state_match_in_process_calls(predict, reference):
    chars = ref_chars = np.array([b"ROMEO:", "hé".encode()])
    states = ref_states = np.zeros([2, STATE_SIZE], np.float32)
    temperature = np.array([0.9, 1.3], np.float32)
    served_text, reference_text = [], []
    for step in range(30):
        seed = np.int32(1000 + step)
        response = predict(request_for("serving_default", {
            "chars": chars, "states": states, "temperature": temperature, "seed": seed}))
        served = outputs_of(response)
        expected = tf_call(reference["serving_default"], {
            "chars": ref_chars, "states": ref_states, "temperature": temperature, "seed": seed})
        np.testing.assert_array_equal(served["states"], expected["states"])
        chars, states = served["next_chars"], served["states"]
        ref_chars, ref_states = expected["next_chars"], expected["states"]
        served_text.append(list(chars))
        reference_text.append(list(ref_chars))
    assert served_text == reference_text
    assert response.model_spec.name == "textgen"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1


def test_generate_matches_in_process_generate(predict, reference):
    inputs = {"prompts": np.array([b"ROMEO:", "hé".encode()]), "num_chars": np.int32(40),
              "temperature": np.array([0.7, 1.2], np.float32), "top_k": np.int32(5),
              "top_p": np.float32(0.9), "seed": np.int32(7)}
    served = outputs_of(predict(request_for("generate", inputs)))
    expected = tf_call(reference["generate"], inputs)
    assert list(served["text"]) == list(expected["text"])
    assert list(served["completion"]) == list(expected["completion"])
    assert served["text"][0].startswith(b"ROMEO:")


def test_omitted_inputs_take_the_signature_defaults(predict, reference):
    inputs = generate_inputs(num_chars=np.int32(30), seed=np.int32(11))
    served = outputs_of(predict(request_for("generate", inputs)))
    expected = tf_call(reference["generate"],
                       {**inputs, "top_k": np.int32(0), "top_p": np.float32(1.0)})
    assert list(served["text"]) == list(expected["text"])


def test_characters_the_vocabulary_never_saw_are_unk_not_errors(predict):
    states = {}
    for text in ("漢", "🙂"):
        response = predict(request_for("serving_default", one_step_inputs(
            chars=np.array([text.encode()]), temperature=np.array([0.0], np.float32))))
        states[text] = outputs_of(response)["states"]
    np.testing.assert_array_equal(states["漢"], states["🙂"])  # both read as [UNK]
    completion = outputs_of(predict(request_for("generate", generate_inputs(
        prompts=np.array(["ROMÉO 漢字:".encode()]), seed=np.int32(3)))))["text"][0]
    assert completion.startswith("ROMÉO 漢字:".encode())


def test_output_filter_returns_only_the_named_outputs(predict):
    response = predict(request_for("serving_default", one_step_inputs(), output_filter=["states"]))
    assert set(response.outputs) == {"states"}


def test_concurrent_requests_all_get_their_own_answers(predict, reference):
    seeds = list(range(1, 13))
    expected = {seed: list(tf_call(reference["generate"], generate_inputs(
        num_chars=np.int32(25), seed=np.int32(seed), top_k=np.int32(0),
        top_p=np.float32(1.0)))["text"]) for seed in seeds}
    answers, errors = {}, []

    def call(seed):
        try:
            answers[seed] = list(outputs_of(predict(request_for("generate", generate_inputs(
                num_chars=np.int32(25), seed=np.int32(seed)))))["text"])
        except grpc.RpcError as err:
            errors.append(err)

    threads = [threading.Thread(target=call, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert answers == expected


# --- metadata and status --------------------------------------------------------------------

def test_metadata_lists_the_signatures_with_shapes_and_defaults(channel):
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = protos.get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"])
    request.model_spec.name = "textgen"
    response = stub.GetModelMetadata(request)
    signature_defs = protos.get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    signature_defs = signature_defs.signature_def
    assert {"serving_default", "generate", "score"} <= set(signature_defs)
    assert [d.size for d in signature_defs["serving_default"].inputs["states"].tensor_shape.dim] \
        == [-1, STATE_SIZE]
    assert set(signature_defs["generate"].defaults) == {"top_k", "top_p", "seed"}
    assert response.model_spec.version.value == 1

    request.ClearField("metadata_field")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelMetadata(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata_field" in caught.value.details()


def test_model_status_reports_the_available_version(channel):
    stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
    request = protos.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "textgen"
    response = stub.GetModelStatus(request)
    state = protos.get_model_status_pb2.ModelVersionStatus.State
    assert [(s.version, state.Name(s.state), s.status.error_code)
            for s in response.model_version_status] == [(1, "AVAILABLE", 0)]
    request.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelStatus(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Could not find version 9 of model textgen"


# --- bad requests: the right status, a message naming the field, and the server goes on --------

BAD_REQUESTS = {
    "missing input": ("serving_default", one_step_inputs(states=None), "states"),
    "float64 temperature": ("serving_default",
                            one_step_inputs(temperature=np.array([1.0], np.float64)),
                            "temperature"),
    "string temperature": ("serving_default", one_step_inputs(temperature=np.array([b"hot"])),
                           "temperature"),
    "states without batch dimension": ("serving_default",
                                       one_step_inputs(states=np.zeros([STATE_SIZE], np.float32)),
                                       "states"),
    "states of the wrong width": ("serving_default",
                                  one_step_inputs(states=np.zeros([1, 5], np.float32)), "states"),
    "num_chars as a matrix": ("generate", generate_inputs(num_chars=np.array([[5]], np.int32)),
                              "num_chars"),
    "batch sizes disagree": ("serving_default",
                             one_step_inputs(chars=np.array([b"a", b"b"]),
                                             states=np.zeros([3, STATE_SIZE], np.float32)),
                             "states"),
    "a parameter with other rows": ("generate", generate_inputs(
        prompts=np.array([b"a", b"b"]), temperature=np.ones([3], np.float32)), "temperature"),
    "num_chars above the limit": ("generate", generate_inputs(num_chars=np.int32(10_001)),
                                  "num_chars"),
    "negative num_chars": ("generate", generate_inputs(num_chars=np.int32(-1)), "num_chars"),
    "negative temperature": ("generate", generate_inputs(temperature=np.array([-0.5], np.float32)),
                             "temperature"),
    "NaN temperature": ("serving_default",
                        one_step_inputs(temperature=np.array([np.nan], np.float32)),
                        "temperature"),
    "top_p of zero": ("generate", generate_inputs(top_p=np.float32(0.0)), "top_p"),
    "top_p above one": ("generate", generate_inputs(top_p=np.float32(1.5)), "top_p"),
    "negative top_k": ("generate", generate_inputs(top_k=np.int32(-2)), "top_k"),
    "empty prompt": ("generate", generate_inputs(prompts=np.array([b""])), "prompts"),
    "unknown input": ("serving_default", one_step_inputs(bogus=np.array([1], np.int32)), "bogus"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_invalid_argument_naming_the_field(predict, case):
    signature, inputs, field = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as caught:
        predict(request_for(signature, inputs))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()
    if case == "num_chars above the limit":
        assert "10000" in caught.value.details()
    assert predict(request_for("serving_default", one_step_inputs())).outputs["next_chars"]


SPEC_ERRORS = {
    # TF Serving answers an unknown signature with FAILED_PRECONDITION (predict_util.cc).
    "unknown signature": (dict(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
                          'Serving signature key "nope" not found.'),
    "unknown model": (dict(name="other"), grpc.StatusCode.NOT_FOUND,
                      "Servable not found for request: Latest(other)"),
    "unknown version": (dict(version=7), grpc.StatusCode.NOT_FOUND,
                        "Servable not found for request: Specific(textgen, 7)"),
    "version label": (dict(label="stable"), grpc.StatusCode.INVALID_ARGUMENT,
                      "Unrecognized servable version label: stable"),
    "unknown output": (dict(output_filter=["logits"]), grpc.StatusCode.INVALID_ARGUMENT,
                       "output tensor alias not found in signature: logits"),
}


@pytest.mark.parametrize("case", list(SPEC_ERRORS))
def test_unknown_names_get_tf_serving_status_and_text(predict, case):
    changes, code, text = SPEC_ERRORS[case]
    changes = dict(changes)
    signature = changes.pop("signature", "serving_default")
    with pytest.raises(grpc.RpcError) as caught:
        predict(request_for(signature, one_step_inputs(), **changes))
    assert caught.value.code() == code
    assert text in caught.value.details()


def test_request_without_model_spec_is_invalid(predict):
    request = protos.predict_pb2.PredictRequest()
    with pytest.raises(grpc.RpcError) as caught:
        predict(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Missing ModelSpec"


def test_grpc_messages_above_the_limit_are_refused(predict):
    big = np.array([b"a" * (MAX_MESSAGE_BYTES + 1)])
    with pytest.raises(grpc.RpcError) as caught:
        predict(request_for("generate", generate_inputs(prompts=big)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- REST -----------------------------------------------------------------------------------

def http(server, method, path, body=None, raw=None):
    """(status, parsed JSON) of one request to the REST port."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_model_status_and_metadata(server):
    status, doc = http(server, "GET", "/v1/models/textgen")
    assert status == 200
    assert doc == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    status, doc = http(server, "GET", "/v1/models/textgen/versions/1/metadata")
    assert status == 200
    assert doc["model_spec"]["name"] == "textgen" and doc["model_spec"]["version"] == "1"
    signature_defs = doc["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "generate", "score"} <= set(signature_defs)
    assert signature_defs["generate"]["inputs"]["num_chars"]["dtype"] == "DT_INT32"


def test_rest_instances_rows_match_in_process_calls(server, reference):
    rows = [{"chars": "ROMEO:", "states": [0.0] * STATE_SIZE, "temperature": 0.0},
            {"chars": "hé", "states": [0.0] * STATE_SIZE, "temperature": 0.0}]
    status, doc = http(server, "POST", "/v1/models/textgen:predict", {"instances": rows})
    assert status == 200
    expected = tf_call(reference["serving_default"], {
        "chars": np.array([b"ROMEO:", "hé".encode()]),
        "states": np.zeros([2, STATE_SIZE], np.float32),
        "temperature": np.zeros([2], np.float32), "seed": np.int32(1)})
    assert [p["next_chars"] for p in doc["predictions"]] == \
        [c.decode() for c in expected["next_chars"]]
    served_states = np.array([p["states"] for p in doc["predictions"]], np.float32)
    np.testing.assert_array_equal(served_states, expected["states"])  # float32 text round trip


def test_rest_inputs_columns_match_in_process_generate(server, reference):
    prompt_b64 = {"b64": base64.b64encode("hé".encode()).decode()}
    status, doc = http(server, "POST", "/v1/models/textgen/versions/1:predict", {
        "signature_name": "generate",
        "inputs": {"prompts": ["ROMEO:", prompt_b64], "num_chars": 30,
                   "temperature": [0.8, 0.8], "seed": 5}})
    assert status == 200
    expected = tf_call(reference["generate"], {
        "prompts": np.array([b"ROMEO:", "hé".encode()]), "num_chars": np.int32(30),
        "temperature": np.full([2], 0.8, np.float32), "top_k": np.int32(0),
        "top_p": np.float32(1.0), "seed": np.int32(5)})
    assert doc["outputs"]["text"] == [t.decode() for t in expected["text"]]
    assert doc["outputs"]["completion"] == [t.decode() for t in expected["completion"]]


ROW = {"chars": "ab", "states": [0.0] * STATE_SIZE, "temperature": 1.0}
REST_ERRORS = {
    "missing input": ({"instances": [{"chars": "ab", "temperature": 1.0}]}, 400, "states"),
    "string temperature": ({"instances": [{**ROW, "temperature": "hot"}]}, 400, "temperature"),
    "NaN temperature": (b'{"instances": [{"chars": "ab", "temperature": NaN, "states": ['
                        + b",".join([b"0.0"] * STATE_SIZE) + b"]}]}", 400, "temperature"),
    "ragged states": ({"inputs": {"chars": ["a", "b"], "temperature": [1.0, 1.0],
                                  "states": [[0.0] * STATE_SIZE, [0.0]]}}, 400, "states"),
    "rows disagree": ({"instances": [ROW, {"chars": "b", "temperature": 1.0}]}, 400, "keys"),
    "num_chars above the limit": ({"signature_name": "generate", "inputs": {
        "prompts": ["a"], "num_chars": 10_001, "temperature": [1.0]}}, 400, "num_chars"),
    "top_p outside (0, 1]": ({"signature_name": "generate", "inputs": {
        "prompts": ["a"], "num_chars": 3, "temperature": [1.0], "top_p": 0.0}}, 400, "top_p"),
    "unknown signature": ({"signature_name": "nope", "instances": [ROW]}, 400,
                          'Serving signature name: "nope" not found'),
    "malformed JSON": (b'{"instances": [', 400, "JSON Parse error"),
    "both formats": ({"instances": [ROW], "inputs": {}}, 400, "only one of"),
    "neither format": ({"signature_name": "serving_default"}, 400,
                       "Missing 'inputs' or 'instances' key"),
}


@pytest.mark.parametrize("case", list(REST_ERRORS))
def test_rest_bad_request_is_400_with_tf_serving_error_json(server, case):
    body, expected_status, text = REST_ERRORS[case]
    status, doc = http(server, "POST", "/v1/models/textgen:predict",
                       **({"raw": body} if isinstance(body, bytes) else {"body": body}))
    assert status == expected_status
    assert list(doc) == ["error"] and text in doc["error"]
    assert http(server, "POST", "/v1/models/textgen:predict", {"instances": [ROW]})[0] == 200


@pytest.mark.parametrize("method, path, expected_status, text", [
    ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
    ("POST", "/v1/models/textgen/versions/3:predict", 404, "Specific(textgen, 3)"),
    ("GET", "/v1/models/textgen/versions/3", 404, "Could not find version 3 of model textgen"),
    ("GET", "/v1/models/..%2F..%2Fetc/metadata", 404, "Latest(../../etc)"),
    ("GET", "/v1/models/textgen/versions/99999999999999999999", 400, "Failed to convert version"),
    ("POST", "/v1/models/textgen/versions/x:predict", 400, "Malformed request"),
    ("GET", "/v2/models/textgen", 404, "Unknown path"),
    ("POST", "/V1/Models/textgen:classify", 501, ":classify is not implemented"),
])
def test_rest_unknown_models_and_paths(server, method, path, expected_status, text):
    status, doc = http(server, method, path, {} if method == "POST" else None)
    assert status == expected_status
    assert text in doc["error"]


def test_rest_bodies_above_the_limit_are_refused(server):
    status, doc = http(server, "POST", "/v1/models/textgen:predict",
                       raw=b" " * (MAX_MESSAGE_BYTES + 1))
    assert status == 413 and "limit" in doc["error"]


def prometheus_values(server):
    """{(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metric(name, **labels):
    return (name, tuple(sorted(labels.items())))


def test_prometheus_metrics_count_requests_by_status(server, predict):
    """Counted from before to after this test's own requests: earlier tests' counts
    cannot make it pass."""
    ok = metric(":tensorflow:serving:request_count", model_name="textgen", status="OK")
    invalid = metric(":tensorflow:serving:request_count", model_name="textgen",
                     status="INVALID_ARGUMENT")
    grpc_predict = dict(model_name="textgen", API="Predict", entrypoint="GRPC", status="OK")
    latency_count = metric(":tensorflow:serving:request_latency_count", **grpc_predict)
    before = prometheus_values(server)
    predict(request_for("serving_default", one_step_inputs()))
    predict(request_for("serving_default", one_step_inputs()))
    with pytest.raises(grpc.RpcError):
        predict(request_for("generate", generate_inputs(top_p=np.float32(2.0))))
    http(server, "GET", "/v1/models/textgen")
    values = prometheus_values(server)
    assert values[ok] - before.get(ok, 0) == 2
    assert values[invalid] - before.get(invalid, 0) == 1
    assert values[latency_count] - before.get(latency_count, 0) == 2
    assert values[metric(":tensorflow:serving:request_latency_bucket", le="+Inf",
                         **grpc_predict)] == values[latency_count]
    status_rest = metric(":tensorflow:serving:request_latency_count", model_name="textgen",
                         API="GetModelStatus", entrypoint="REST", status="OK")
    assert values[status_rest] - before.get(status_rest, 0) == 1
    assert any(name == ":tensorflow:cc:saved_model:load_attempt_count" and
               ("status", "success") in labels for name, labels in values)
