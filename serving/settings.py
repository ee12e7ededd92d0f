"""Serving settings, each defined once: the model name, address, ports, polling, request
limits, client timeout and batching parameters that the server, the clients and the
command line share. The sampling defaults and rules are the model's (models/settings.py).

Free of TensorFlow and gRPC, so that `textgen --help` stays instant.
"""
import os
from dataclasses import dataclass, field, fields
from typing import Tuple

# TF Serving's conventions (tensorflow_model_server --port / --rest_api_port).
DEFAULT_MODEL_NAME = "textgen"
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MAX_MESSAGE_MB = 64
# The interface `textgen serve` listens on: loopback only (0.0.0.0 for every interface).
DEFAULT_HOST = "127.0.0.1"
# Seconds between looks for new versions in the serving directory (0: only at start).
DEFAULT_POLL_SECONDS = 1.0
# Seconds a client waits for one call (`textgen generate --timeout`, serving/client.py).
DEFAULT_CLIENT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Limits:
    """Server-side bounds on what one request may ask for.

    max_num_chars: the largest `num_chars` of a generate call.
    max_batch_chars: the largest rows × (longest prompt + num_chars): the characters one
      request makes the model step through, which is what its cost grows with.
    request_timeout: seconds a request may run in the model before it is cancelled
      (DEADLINE_EXCEEDED); a gRPC client's shorter deadline cuts it earlier.
    """
    max_num_chars: int = 10_000
    max_batch_chars: int = 200_000
    request_timeout: float = 300.0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's BatchingParameters (session_bundle_config.proto), the fields that
    `textgen serve --enable_batching` honours, with TF Serving's defaults.

    max_batch_size: most rows merged into one model call; a request with more rows is
      refused (INVALID_ARGUMENT), as TF Serving does without large-batch splitting.
    batch_timeout_micros: longest a batch waits for more requests once it has one.
    num_batch_threads: model calls that may run at the same time.
    max_enqueued_batches: batches that may wait; a request beyond them is refused at once
      with UNAVAILABLE (HTTP 503) rather than queued.
    """
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10


# What `textgen serve` batches with when no --batching_parameters_file is given (TF
# Serving's server batches only when told to; ours batches by default): the parameters
# measured best on 2 CPU cores (docs/benchmarks.md, "Serving under load"), the same as
# deploy/config/batching.config, which says why each (tests/test_serving_batching.py
# keeps the two equal).
SERVE_BATCHING = BatchingParameters(max_batch_size=64, batch_timeout_micros=5000,
                                    num_batch_threads=1, max_enqueued_batches=256)


# With batching on, concurrent `generate` requests advance together in rounds of at most
# this many characters (serving/stepping.py): the longest a newcomer waits to join, in
# model steps, against one model call per round for the running ones.
GENERATE_CHUNK_CHARS = 32


# Fields of BatchingParameters that only matter to TF Serving's own scheduler: accepted in
# the shared config file, not used here (our graphs take any batch size without padding,
# and every input has the same shape past dimension 0, so there is nothing to pad).
_TF_SERVING_ONLY = ("allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name",
                    "enable_large_batch_splitting", "max_execution_batch_size")


def _batching_parameters_message():
    """The BatchingParameters message class, built from its field list: the proto is part
    of TF Serving's server, not of the tensorflow-serving-api package."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="textgen/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    spec = descriptor_pb2.FieldDescriptorProto
    for number, name, type_name in (
            (1, "max_batch_size", ".google.protobuf.Int64Value"),
            (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
            (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
            (4, "num_batch_threads", ".google.protobuf.Int64Value"),
            (5, "thread_pool_name", ".google.protobuf.StringValue"),
            (8, "enable_large_batch_splitting", ".google.protobuf.BoolValue"),
            (9, "max_execution_batch_size", ".google.protobuf.Int64Value")):
        message.field.add(name=name, number=number, type_name=type_name,
                          type=spec.TYPE_MESSAGE, label=spec.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=spec.TYPE_INT64,
                      label=spec.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=spec.TYPE_BOOL,
                      label=spec.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def read_batching_parameters(path: str) -> Tuple[BatchingParameters, Tuple[str, ...]]:
    """(parameters, names of fields set that only TF Serving uses) from a
    --batching_parameters_file (protobuf text format, as tensorflow_model_server reads it).

    ValueError names the file and what is wrong with it.
    """
    from google.protobuf import text_format
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from None
    message = _batching_parameters_message()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not TF Serving's BatchingParameters text format ({err})"
                         ) from None
    values = {}
    for spec in fields(BatchingParameters):
        if message.HasField(spec.name):
            value = getattr(message, spec.name).value
            if value < (0 if spec.name == "batch_timeout_micros" else 1):
                raise ValueError(f"{path}: {spec.name} is {value}; it must be "
                                 f"{'>= 0' if spec.name == 'batch_timeout_micros' else '>= 1'}")
            values[spec.name] = value
    ignored = tuple(name for name in _TF_SERVING_ONLY
                    if (name == "allowed_batch_sizes" and message.allowed_batch_sizes)
                    or (name == "pad_variable_length_inputs" and message.pad_variable_length_inputs)
                    or (name not in ("allowed_batch_sizes", "pad_variable_length_inputs")
                        and message.HasField(name)))
    return BatchingParameters(**values), ignored
