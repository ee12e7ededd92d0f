"""InfraValidator: the candidate must load and answer in a serving process before a push.

TFX's InfraValidator does this with TF Serving in Docker or Kubernetes, neither of which
every host here has; this one keeps its contract (an `InfraBlessing` with `blessed` 1 or
0 and an INFRA_BLESSED / INFRA_NOT_BLESSED file, taken by the Pusher as
`infra_blessing`) and runs `textgen serve` in a process of its own instead:

  1. the candidate is served as version 1 of a throwaway base path; `textgen serve`
     replays the model's warm-up requests before the version becomes AVAILABLE, as TF
     Serving does (a candidate whose warm-up fails never loads);
  2. every warm-up request (models/warmup.py: one per signature) is sent again over
     gRPC, the way clients call;
  3. `generate` of `generate_chars` characters is timed (median of LATENCY_TRIES): with
     a bound set, a slower candidate is not blessed.

Why a candidate was refused goes onto the blessing as `reason` (the run summary and
`textgen runs` print it), the measured latency as `generate_latency_ms`, and the serving
process's output into the blessing's folder as serving.log.
"""
import dataclasses
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from components import names

logger = logging.getLogger(__name__)

# TFX's InfraValidator's names (tfx/components/infra_validator/executor.py), which its
# Pusher reads.
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"
LATENCY_TRIES = 3
# The model name the candidate is served under; only this component's requests use it.
MODEL_NAME = "candidate"
# How `textgen serve` is started in the serving process: the installed command line's
# module, run by this interpreter (the same environment as the pipeline's).
SERVE_COMMAND = [sys.executable, "-m", "textgen_cli", "serve"]


@dataclasses.dataclass
class Result:
    blessed: bool
    reason: str = ""  # why not, empty when blessed
    latency_ms: Optional[float] = None  # median `generate` latency, when it got that far


class Refused(Exception):
    """The candidate failed a check; the message says which and why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warmup_logs(model_path: str) -> list:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    path = path_utils.warmup_file_path(model_path)
    if not tf.io.gfile.exists(path):
        raise Refused(f"the model has no warm-up requests ({path}); re-export it with this "
                      "version of models/export.py")
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        logs.append(prediction_log_pb2.PredictionLog.FromString(record))
    return logs


def _requested_chars(request) -> int:
    import tensorflow as tf
    if "num_chars" not in request.inputs:
        return 0
    return int(tf.make_ndarray(request.inputs["num_chars"]).max())


class _ServingProcess:
    """`textgen serve` on a free port for the candidate alone; its output in log_path."""

    def __init__(self, model_path: str, log_path: str, max_num_chars: int, timeout: float):
        self.timeout = timeout
        self._base = tempfile.mkdtemp(prefix="textgen-infra-")
        version_dir = os.path.join(self._base, "1")
        if "://" in model_path:  # the server lists versions on a local disk
            io_utils.copy_dir(model_path, version_dir)
        else:
            os.symlink(os.path.abspath(model_path), version_dir)
        self.port = _free_port()
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            SERVE_COMMAND + ["--model-dir", self._base, "--model-name", MODEL_NAME,
                             "--port", str(self.port), "--no-rest", "--poll-seconds", "0",
                             "--max-num-chars", str(max_num_chars)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.log_path = log_path

    def tail(self, lines: int = 3) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            kept = [line.strip() for line in f if line.strip()]
        return " | ".join(kept[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self._base, ignore_errors=True)


def _wait_until_loaded(server: _ServingProcess, channel, deadline: float) -> None:
    """Returns once the candidate is AVAILABLE; Refused if it failed to load, the
    process ended, or the deadline passed."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
    ready = grpc.channel_ready_future(channel)
    while True:
        if server.process.poll() is not None:
            raise Refused(f"the serving process exited with code {server.process.returncode} "
                          f"before answering: {server.tail()}")
        if time.time() > deadline:
            raise Refused("the serving process did not start listening within infra.timeout "
                          f"({server.timeout:g} s); raise it on a slow host")
        try:
            ready.result(timeout=0.5)
            break
        except grpc.FutureTimeoutError:
            continue
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    try:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=max(1.0, deadline - time.time()))
    except grpc.RpcError as err:
        raise Refused(f"the candidate did not load ({err.code().name}: {err.details()})"
                      ) from None
    for status in response.model_version_status:
        state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        if state != "AVAILABLE":
            raise Refused(f"the candidate did not load ({status.status.error_message or state})")


def _predict(stub, request, deadline: float) -> float:
    """One Predict call; its latency in milliseconds. Refused if it fails."""
    import grpc
    request.model_spec.name = MODEL_NAME
    signature = request.model_spec.signature_name or "serving_default"
    start = time.perf_counter()
    try:
        stub.Predict(request, timeout=max(1.0, deadline - time.time()))
    except grpc.RpcError as err:
        raise Refused(f"signature {signature!r} did not answer ({err.code().name}: "
                      f"{err.details()})") from None
    return (time.perf_counter() - start) * 1000


def validate(model_path: str, log_path: str, generate_chars: int,
             max_latency_ms: Optional[float], timeout: float) -> Result:
    """Serves model_path in a process of its own and queries it (the module's docstring)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    deadline = time.time() + timeout
    latency = None
    try:
        logs = _warmup_logs(model_path)
        requests = [log.predict_log.request for log in logs if log.HasField("predict_log")]
        generate = [r for r in requests if r.model_spec.signature_name == "generate"]
        if not generate:
            raise Refused("the model's warm-up requests have no `generate` request to time")
        timed = type(generate[0])()
        timed.CopyFrom(generate[0])
        timed.inputs["num_chars"].CopyFrom(tf.make_tensor_proto([generate_chars], tf.int32))
        most = max([generate_chars] + [_requested_chars(r) for r in requests])
        server = _ServingProcess(model_path, log_path, most, timeout)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                _wait_until_loaded(server, channel, deadline)
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for request in requests:
                    _predict(stub, request, deadline)
                latency = statistics.median(
                    _predict(stub, timed, deadline) for _ in range(LATENCY_TRIES))
        finally:
            server.close()
        if max_latency_ms is not None and latency > max_latency_ms:
            raise Refused(f"generate of {generate_chars} characters took {latency:.1f} ms "
                          f"(median of {LATENCY_TRIES}), above the bound of {max_latency_ms:g} "
                          "ms (infra.max_latency_ms)")
    except Refused as refused:
        return Result(False, str(refused), latency)
    return Result(True, "", latency)


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict, output_dict, exec_properties):
        model = artifact_utils.get_single_instance(input_dict[names.MODEL])
        blessing = artifact_utils.get_single_instance(output_dict[names.BLESSING])
        bound = exec_properties.get("max_latency_ms")  # absent when unset (no bound)
        result = validate(path_utils.serving_model_path(model.uri),
                          os.path.join(blessing.uri, "serving.log"),
                          exec_properties["generate_chars"], bound, exec_properties["timeout"])
        io_utils.write_string_file(os.path.join(
            blessing.uri, BLESSED_FILE if result.blessed else NOT_BLESSED_FILE), "")
        blessing.set_int_custom_property(names.BLESSED, int(result.blessed))
        if result.latency_ms is not None:
            blessing.set_float_custom_property(names.LATENCY_MS, result.latency_ms)
        if result.blessed:
            logger.info("infra validation passed: generate latency %.1f ms", result.latency_ms)
        else:
            blessing.set_string_custom_property(names.REASON, result.reason)
            logger.warning("infra validation failed: %s", result.reason)


class InfraValidatorSpec(types.ComponentSpec):
    PARAMETERS = {
        "generate_chars": ExecutionParameter(type=int),
        "max_latency_ms": ExecutionParameter(type=float, optional=True),
        "timeout": ExecutionParameter(type=float),
    }
    INPUTS = {names.MODEL: ChannelParameter(type=standard_artifacts.Model)}
    OUTPUTS = {names.BLESSING: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class InfraValidator(base_component.BaseComponent):
    """Blesses a model that loads and answers in `textgen serve` (InfraBlessing)."""

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, generate_chars: int,
                 max_latency_ms: Optional[float], timeout: float):
        super().__init__(spec=InfraValidatorSpec(
            model=model, generate_chars=generate_chars, max_latency_ms=max_latency_ms,
            timeout=timeout, blessing=types.Channel(type=standard_artifacts.InfraBlessing)))

