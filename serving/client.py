"""Clients of the textgen model behind TF Serving's Predict API: gRPC, REST or in process.

Only standard calls are used (Predict, and GetModelMetadata for the state size), so the
same code talks to `textgen serve` and to a real tensorflow_model_server:

    with connect(server="localhost:8500") as client:
        print(client.generate(["ROMEO:"], num_chars=300, seed=7)[0])
        for char in client.stream("ROMEO:", num_chars=300, seed=7):
            print(char, end="", flush=True)

`generate` calls the `generate` signature (the whole sampling loop runs in the model);
`stream` drives the one-step `serving_default` signature, carrying the RNN state from
call to call, and yields each character as it arrives. The two draw different (equally
valid) samples for the same seed; each is reproducible on its own.
"""
import abc
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from models import features
from models.settings import DEFAULT_SAMPLING, SAMPLING_RULES
from serving import protos, rest, signatures
from serving.errors import ServingError, code_for_http_status, invalid_argument
from serving.settings import DEFAULT_CLIENT_TIMEOUT, DEFAULT_LIMITS, DEFAULT_MODEL_NAME, Limits

GENERATE_SIGNATURE = features.GENERATE_SIGNATURE
ONE_STEP_SIGNATURE = features.ONE_STEP_SIGNATURE
_INT32_MAX = SAMPLING_RULES["seed"].high


class Prediction(NamedTuple):
    outputs: Dict[str, np.ndarray]
    version: Optional[int]  # the version that answered (unknown over REST)


def step_seed(seed: int, step: int) -> int:
    """A distinct nonzero int32 seed per step of a seeded stream; 0 stays 0 (random)."""
    if seed == 0:
        return 0
    return 1 + (seed * 2654435761 + step) % (_INT32_MAX - 1)


def _row_seeds(seed: Union[int, Sequence[int]], rows: int) -> np.ndarray:
    """One seed per row. A single nonzero seed gives rows seed, seed+1, ...: a row's draws
    depend only on its own seed, so rows sharing one would all draw the same text."""
    if np.ndim(seed) == 0:
        seed = [0 if seed == 0 else 1 + (seed - 1 + row) % _INT32_MAX for row in range(rows)]
    return np.broadcast_to(np.asarray(seed, np.int32), [rows]).copy()


def _strings(values: Sequence[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode("utf-8") for v in values]
    return array


class Client(abc.ABC):
    """The textgen calls, over any transport that implements predict and signature_defs."""

    def __init__(self, model_name: str = DEFAULT_MODEL_NAME, version: Optional[int] = None):
        self.model_name = model_name
        self.version = version
        self._signature_defs = None

    @abc.abstractmethod
    def predict(self, inputs: Dict[str, np.ndarray],
                signature_name: str = ONE_STEP_SIGNATURE) -> Prediction:
        """One Predict call; raises ServingError with the server's status code."""

    @abc.abstractmethod
    def _fetch_signature_defs(self) -> Dict[str, "protos.meta_graph_pb2.SignatureDef"]:
        """The model's SignatureDefs (GetModelMetadata)."""

    def signature_defs(self) -> Dict[str, "protos.meta_graph_pb2.SignatureDef"]:
        if self._signature_defs is None:
            self._signature_defs = self._fetch_signature_defs()
        return self._signature_defs

    def state_size(self) -> int:
        return signatures.state_size(self.signature_defs())

    def generate(self, prompts: Sequence[str], num_chars: Union[int, Sequence[int]],
                 temperature: Union[float, Sequence[float]] = DEFAULT_SAMPLING.temperature,
                 top_k: Union[int, Sequence[int]] = DEFAULT_SAMPLING.top_k,
                 top_p: Union[float, Sequence[float]] = DEFAULT_SAMPLING.top_p,
                 seed: Union[int, Sequence[int]] = DEFAULT_SAMPLING.seed) -> List[str]:
        """One completion per prompt, prompt included. Each parameter is one value for all
        rows or one per prompt; a row's seed 0 draws a random seed for that row. The
        defaults are `textgen generate`'s (models/settings.py)."""
        prompts = list(prompts)
        if not prompts:
            raise invalid_argument("no prompts: give at least one")

        def rows(value, dtype):
            # One value per row: TF Serving's batching needs every input to have the rows
            # of `prompts` (it concatenates concurrent requests along dimension 0).
            return np.broadcast_to(np.asarray(value, dtype), [len(prompts)]).copy()
        result = self.predict({
            "prompts": _strings(prompts),
            "num_chars": rows(num_chars, np.int32),
            "temperature": rows(temperature, np.float32),
            "top_k": rows(top_k, np.int32),
            "top_p": rows(top_p, np.float32),
            "seed": _row_seeds(seed, len(prompts)),
        }, GENERATE_SIGNATURE)
        return [text.decode("utf-8", errors="replace") for text in result.outputs["text"]]

    def stream(self, prompt: str, num_chars: int,
               temperature: float = DEFAULT_SAMPLING.temperature,
               seed: int = DEFAULT_SAMPLING.seed) -> Iterator[str]:
        """Yields `num_chars` generated characters one by one (the prompt is not repeated)."""
        if not prompt:
            raise invalid_argument("the prompt is empty: give at least one character")
        states = np.zeros([1, self.state_size()], np.float32)
        chars = prompt
        for step in range(num_chars):
            outputs = self.predict({
                "chars": _strings([chars]),
                "states": states,
                "temperature": np.array([temperature], np.float32),
                "seed": np.array([step_seed(seed, step)], np.int32),
            }).outputs
            chars = outputs["next_chars"][0].decode("utf-8", errors="replace")
            states = outputs["states"]
            yield chars

    def close(self) -> None:
        """Releases connections; the client is unusable afterwards (nothing to release here)."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GrpcClient(Client):
    """PredictionService over gRPC (`target` is HOST:PORT, TF Serving's --port)."""

    def __init__(self, target: str, model_name: str = DEFAULT_MODEL_NAME,
                 version: Optional[int] = None, timeout: float = DEFAULT_CLIENT_TIMEOUT):
        import grpc
        super().__init__(model_name, version)
        self.target = target
        self._grpc = grpc
        self._timeout = timeout
        # Completions of many thousand characters exceed gRPC's 4 MB default.
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self._stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _fill_spec(self, spec, signature_name: str = "") -> None:
        spec.name = self.model_name
        spec.signature_name = signature_name
        if self.version is not None:
            spec.version.value = self.version

    def _call(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except self._grpc.RpcError as err:
            code, details = err.code().name, err.details() or ""
            if code == "UNAVAILABLE":
                details = (f"cannot reach {self.target} ({details}); is `textgen serve` or "
                           "tensorflow_model_server running there?")
            raise ServingError(code, details) from None

    def predict(self, inputs, signature_name=ONE_STEP_SIGNATURE) -> Prediction:
        request = protos.predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, signature_name)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(protos.make_tensor_proto(value))
        response = self._call(self._stub.Predict, request)
        version = response.model_spec.version.value if response.model_spec.HasField(
            "version") else None
        return Prediction({alias: protos.make_ndarray(proto)
                           for alias, proto in response.outputs.items()}, version)

    def _fetch_signature_defs(self):
        request = protos.get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self._fill_spec(request.model_spec)
        response = self._call(self._stub.GetModelMetadata, request)
        signature_def_map = protos.get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_def_map)
        return dict(signature_def_map.signature_def)

    def close(self) -> None:
        self._channel.close()


class RestClient(Client):
    """TF Serving's REST API (`base_url` is http://HOST:PORT, TF Serving's --rest_api_port)."""

    def __init__(self, base_url: str, model_name: str = DEFAULT_MODEL_NAME,
                 version: Optional[int] = None, timeout: float = DEFAULT_CLIENT_TIMEOUT):
        super().__init__(model_name, version)
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout

    def _url(self, suffix: str) -> str:
        url = f"{self.base_url}/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            url += f"/versions/{self.version}"
        return url + suffix

    def _request(self, url: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or err.reason
            raise ServingError(code_for_http_status(err.code), message) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):
                raise ServingError("DEADLINE_EXCEEDED", f"no answer from {self.base_url} within "
                                   f"{self._timeout:g} s") from None
            raise ServingError("UNAVAILABLE", f"cannot reach {self.base_url} ({reason}); is "
                               "`textgen serve` or tensorflow_model_server running there?"
                               ) from None

    def predict(self, inputs, signature_name=ONE_STEP_SIGNATURE) -> Prediction:
        doc = self._request(self._url(":predict"), {
            "signature_name": signature_name,
            "inputs": {alias: rest.array_to_json(value, alias) for alias, value in inputs.items()},
        })
        _, signature_def = signatures.find(self.signature_defs(), signature_name)
        return Prediction(rest.decode_predict_response(doc, signature_def.outputs), None)

    def _fetch_signature_defs(self):
        from google.protobuf import json_format
        doc = self._request(self._url("/metadata"))
        signature_def_map = protos.get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(doc["metadata"]["signature_def"], signature_def_map,
                              ignore_unknown_fields=True)
        return dict(signature_def_map.signature_def)


class InProcessClient(Client):
    """Loads the SavedModel here, with TensorFlow; no server involved.

    `model_dir` is a SavedModel, or a serving directory of <version>/ SavedModels (the
    newest is taken unless `version` names one).
    """

    def __init__(self, model_dir: str, model_name: str = DEFAULT_MODEL_NAME,
                 version: Optional[int] = None,
                 limits: Limits = DEFAULT_LIMITS):
        super().__init__(model_name, version)
        from serving.servable import Servable  # TensorFlow: imported only when used
        path, found_version = resolve_model_dir(model_dir, version)
        self._servable = Servable(path, found_version)
        self._limits = limits

    def predict(self, inputs, signature_name=ONE_STEP_SIGNATURE) -> Prediction:
        _, outputs = self._servable.predict(signature_name, inputs, limits=self._limits)
        return Prediction(outputs, self._servable.version)

    def _fetch_signature_defs(self):
        return self._servable.signature_defs


def resolve_model_dir(model_dir: str, version: Optional[int] = None):
    """(SavedModel directory, version) for a SavedModel or a <version>/ serving directory.

    Raises ServingError(NOT_FOUND) when there is no SavedModel where one is expected.
    """
    from serving.manager import find_versions
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        name = os.path.basename(os.path.normpath(model_dir))
        found = int(name) if name.isdigit() else 0
        if version is not None and version != found:
            raise ServingError("NOT_FOUND", f"{model_dir} is a single SavedModel (version "
                               f"{found}); pass its parent directory to choose version {version}")
        return model_dir, found
    try:
        versions = find_versions(model_dir)
    except OSError as err:
        raise ServingError("NOT_FOUND", f"{model_dir}: cannot read it ({err.strerror})") from None
    if not versions:
        raise ServingError("NOT_FOUND", f"{model_dir} holds no SavedModel: expected "
                           f"{model_dir}/saved_model.pb or {model_dir}/<version>/saved_model.pb")
    if version is None:
        version = max(versions)
    elif version not in versions:
        raise ServingError("NOT_FOUND", f"{model_dir} has no version {version} (it has "
                           f"{', '.join(map(str, versions))})")
    return versions[version], version


def connect(server: Optional[str] = None, rest_url: Optional[str] = None,
            model_dir: Optional[str] = None, model_name: str = DEFAULT_MODEL_NAME,
            version: Optional[int] = None, timeout: float = DEFAULT_CLIENT_TIMEOUT) -> Client:
    """A client for exactly one of: gRPC HOST:PORT, a REST base URL, a model directory."""
    given = [x for x in (server, rest_url, model_dir) if x]
    if len(given) != 1:
        raise ValueError("connect() needs exactly one of server, rest_url, model_dir")
    if server:
        return GrpcClient(server, model_name, version, timeout)
    if rest_url:
        return RestClient(rest_url, model_name, version, timeout)
    return InProcessClient(model_dir, model_name, version)
