"""Property-based fuzzing of request parsing, gRPC and REST (issue 6).

Every request, however malformed, gets a result or a clean client error
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION / HTTP 400, 404), never INTERNAL, a 500
or a dropped connection, and the server keeps answering afterwards. Requests are drawn
both at random and as valid requests with random values, so that the checks in front of
the model and the model itself see hostile values too.
"""
import base64
import json
import math

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serving import protos
from test_reliability_server import limited_server_for, rest_request

STATE_SIZE = 16  # the tiny model: one GRU layer of 16 units
CLEAN_GRPC_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION}
CLEAN_HTTP_STATUSES = {200, 400, 404}
FUZZ_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large])

INT32 = st.integers(-2**31, 2**31 - 1)
INT64 = st.integers(-2**63, 2**63 - 1)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
# Integers beyond any float: math.isfinite() of one raises OverflowError.
HUGE_INT = st.integers(-10**400, 10**400)
TEXT_OR_NOT = st.binary(max_size=40) | st.text(max_size=20).map(str.encode)
ALIASES = ["chars", "states", "temperature", "seed", "prompts", "num_chars", "top_k", "top_p",
           "examples"]
SIGNATURES = ["", "serving_default", "generate", "score", "__saved_model_init_op", "bogus"]


@pytest.fixture(scope="module")
def server(tiny_serving_dir):
    # Small caps keep the valid requests among the random ones cheap.
    with limited_server_for(tiny_serving_dir, max_num_chars=200,
                            max_batch_chars=2_000) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as open_channel:
        yield open_channel


def still_serving(server, channel):
    """A valid request answers on both protocols, and no request ever ended as INTERNAL."""
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(valid_one_step_request(), timeout=60)
    assert response.outputs["next_chars"].tensor_shape.dim[0].size == 1
    status, body = post(server, "/v1/models/textgen:predict", json.dumps(
        {"inputs": {"chars": ["a"], "states": [[0.0] * STATE_SIZE],
                    "temperature": [1.0]}}).encode())
    assert status == 200, body
    status, metrics = rest_request(server, "GET", "/monitoring/prometheus/metrics")
    assert 'status="INTERNAL"' not in metrics.decode()


# --- gRPC ------------------------------------------------------------------------------------

SUPPORTED_DTYPES = [protos.types_pb2.DataType.Value(f"DT_{name}") for name in (
    "FLOAT", "DOUBLE", "HALF", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64", "BOOL", "STRING")]
# TensorProto value field → values it can hold (the protobuf field's own range).
VALUE_FIELDS = {
    "float_val": st.lists(FLOAT32, max_size=6),
    "double_val": st.lists(ANY_FLOAT, max_size=6),
    "half_val": st.lists(st.integers(-2**31, 2**31 - 1), max_size=6),
    "int_val": st.lists(INT32, max_size=6),
    "int64_val": st.lists(INT64, max_size=6),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=6),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=6),
    "bool_val": st.lists(st.booleans(), max_size=6),
    "string_val": st.lists(TEXT_OR_NOT, max_size=6),
}
SHAPES = (st.lists(st.integers(0, 4), max_size=4)
          # Powers of two reach the sizes numpy tries (and fails) to allocate, which
          # uniform draws up to 2**63 miss (numpy refuses those at once).
          | st.tuples(st.integers(3, 62).map(lambda e: 2**e), st.integers(1, 8)).map(list)
          | st.lists(st.integers(-3, 2**63 - 1), min_size=1, max_size=3)
          | st.lists(st.just(1), min_size=30, max_size=40))  # more dimensions than numpy has


@st.composite
def tensor_protos(draw):
    proto = protos.tensor_pb2.TensorProto()
    # Half the time a type the server can hold: only those get as far as allocating.
    supported = st.sampled_from(SUPPORTED_DTYPES)
    proto.dtype = draw(supported | supported | st.integers(-3, 300))
    if draw(st.integers(0, 20)) == 0:
        proto.tensor_shape.unknown_rank = True
    for size in draw(SHAPES):
        proto.tensor_shape.dim.add(size=size)
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=128))
    else:
        field = draw(st.sampled_from(sorted(VALUE_FIELDS)))
        getattr(proto, field).extend(draw(VALUE_FIELDS[field]))
    return proto


@st.composite
def random_requests(draw):
    request = protos.predict_pb2.PredictRequest()
    if draw(st.integers(0, 10)):
        # Mostly the served name and no version: the inputs are parsed only then.
        spec = request.model_spec
        spec.name = "textgen" if draw(st.integers(0, 4)) else draw(
            st.sampled_from(["", "../textgen", "/textgen"]) | st.text(max_size=12))
        choice = draw(st.integers(0, 5))
        if choice == 1:
            spec.version.value = draw(INT64)
        elif choice == 2:
            spec.version_label = draw(st.text(max_size=8))
        spec.signature_name = draw(st.sampled_from(SIGNATURES) | st.text(max_size=12))
    for alias in draw(st.lists(st.sampled_from(ALIASES) | st.text(max_size=8), max_size=5)):
        request.inputs[alias].CopyFrom(draw(tensor_protos()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["text", "completion",
                                                                "next_chars", "states"])
                                               | st.text(max_size=6), max_size=3)))
    return request


def valid_one_step_request():
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = "textgen"
    for alias, value in {"chars": np.array([b"a"], dtype=object),
                         "states": np.zeros([1, STATE_SIZE], np.float32),
                         "temperature": np.ones([1], np.float32)}.items():
        request.inputs[alias].CopyFrom(protos.make_tensor_proto(value))
    return request


@st.composite
def valid_requests_with_random_values(draw):
    """A generate or one-step request of the right types and shapes, hostile values."""
    rows = draw(st.integers(0, 5))
    texts = np.array(draw(st.lists(TEXT_OR_NOT, min_size=rows, max_size=rows)), dtype=object)
    temperature = np.array(draw(st.lists(FLOAT32, min_size=rows, max_size=rows)), np.float32)
    if draw(st.booleans()):
        inputs = {"prompts": texts, "temperature": temperature,
                  "num_chars": np.array(draw(INT32), np.int32)}
        for alias, values in (("top_k", INT32), ("top_p", FLOAT32), ("seed", INT32)):
            if draw(st.booleans()):
                inputs[alias] = np.array(draw(values),
                                         np.float32 if alias == "top_p" else np.int32)
        signature = "generate"
    else:
        states = draw(st.lists(FLOAT32, min_size=rows * STATE_SIZE, max_size=rows * STATE_SIZE))
        inputs = {"chars": texts, "temperature": temperature,
                  "states": np.array(states, np.float32).reshape([rows, STATE_SIZE])}
        if draw(st.booleans()):
            inputs["seed"] = np.array(draw(INT32), np.int32)
        signature = "serving_default"
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = "textgen"
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(protos.make_tensor_proto(value))
    return request


def assert_clean_grpc_answer(call, payload):
    try:
        call(payload, timeout=120)
    except grpc.RpcError as err:
        assert err.code() in CLEAN_GRPC_CODES, (err.code(), err.details())
        assert err.details(), err.code()


@FUZZ_SETTINGS
@given(request=random_requests() | valid_requests_with_random_values())
def test_grpc_predict_answers_every_request_cleanly(server, channel, request):
    stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert_clean_grpc_answer(stub.Predict, request)


@FUZZ_SETTINGS
@given(payload=st.binary(max_size=300)
       | random_requests().map(lambda r: r.SerializeToString()).flatmap(
           lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])))
def test_grpc_bytes_that_are_no_request_get_a_clean_answer(server, channel, payload):
    """Raw bytes, and serialized requests cut anywhere: gRPC itself would say INTERNAL."""
    for method in ("/tensorflow.serving.PredictionService/Predict",
                   "/tensorflow.serving.PredictionService/GetModelMetadata",
                   "/tensorflow.serving.ModelService/GetModelStatus"):
        assert_clean_grpc_answer(channel.unary_unary(method), payload)


def test_grpc_server_still_serves_after_fuzzing(server, channel):
    still_serving(server, channel)


# --- REST ------------------------------------------------------------------------------------

def post(server, path, body):
    return rest_request(server, "POST", path, body, {"Content-Type": "application/json"})


JSON_LEAVES = (st.none() | st.booleans() | ANY_FLOAT | HUGE_INT | st.text(max_size=12)
               | st.binary(max_size=12).map(lambda b: {"b64": base64.b64encode(b).decode()})
               | st.text(max_size=12).map(lambda t: {"b64": t}))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.sampled_from(ALIASES) | st.text(max_size=6),
                                             children, max_size=4), max_leaves=20)
ROW = st.dictionaries(st.sampled_from(ALIASES) | st.text(max_size=6), JSON_VALUES, max_size=4)


@st.composite
def tensor_json(draw):
    """Rectangular nested lists of one kind of leaf: what decodes into a tensor."""
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    leaf = draw(st.sampled_from([ANY_FLOAT, HUGE_INT, st.text(max_size=8), st.booleans()]))
    count = math.prod(shape)
    flat = draw(st.lists(leaf, min_size=count, max_size=count))
    value = np.array(flat, dtype=object).reshape(shape).tolist() if shape else \
        draw(leaf)
    return value


@st.composite
def rest_bodies(draw):
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))  # not JSON, or not UTF-8
    if kind == 4:  # nesting deeper than Python's parser recursion, or a tensor's rank
        depth = draw(st.integers(1, 3000))
        return ('{"inputs": {"prompts": ' + "[" * depth + '"a"' + "]" * depth + "}}").encode()
    doc = {}
    if draw(st.booleans()):
        doc["signature_name"] = draw(st.sampled_from(SIGNATURES) | JSON_LEAVES)
    if kind == 1:
        doc["instances"] = draw(st.lists(ROW | JSON_VALUES, max_size=4) | JSON_VALUES)
    elif kind == 2:
        doc["inputs"] = draw(st.dictionaries(st.sampled_from(ALIASES) | st.text(max_size=6),
                                             tensor_json() | JSON_VALUES, max_size=5)
                             | JSON_VALUES)
    else:
        doc = draw(JSON_VALUES)
    return json.dumps(doc).encode()  # NaN and Infinity included, as Python writes them


REST_PATHS = (st.sampled_from(["/v1/models/textgen:predict",
                               "/v1/models/textgen/versions/1:predict",
                               "/v1/models/textgen/versions/99999999999999999999:predict",
                               "/v1/models/textgen/labels/x:predict", "/v1/models/other:predict",
                               "/v1/models/textgen"])
              | st.text(max_size=12).map(lambda t: "/v1/models/" + "".join(
                  f"%{b:02x}" for b in t.encode()) + ":predict"))


@FUZZ_SETTINGS
@given(path=REST_PATHS, body=rest_bodies())
def test_rest_predict_answers_every_request_cleanly(server, path, body):
    status, answer = post(server, path, body)
    assert status in CLEAN_HTTP_STATUSES, (status, answer)
    doc = json.loads(answer)
    assert ("error" in doc) == (status != 200), doc


def test_rest_server_still_serves_after_fuzzing(server, channel):
    still_serving(server, channel)
