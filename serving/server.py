"""The local TF-Serving-compatible model server: gRPC on one port, REST on another.

Built on the servicer classes tensorflow-serving-api ships, so the wire protocol is TF
Serving's own. PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus) over gRPC; over REST `GET /v1/models/NAME[/versions/N][/metadata]`,
`POST /v1/models/NAME[/versions/N]:predict` and `GET /monitoring/prometheus/metrics`.
Errors carry TF Serving's status codes and, over REST, its `{"error": "..."}` body.
"""
import contextlib
import errno
import http.server
import json
import logging
import os
import re
import socket
import socketserver
import threading
import time
import urllib.parse
from concurrent import futures
from typing import Optional

import grpc
from google.protobuf import json_format

from serving import protos, rest, signatures
from serving.deadlines import CancelToken, Watchdog
from serving.errors import CODE_NAMES, HTTP_STATUS, ServingError, invalid_argument
from serving.manager import ModelManager
from serving.metrics import METRICS_PATH, Metrics
from serving.servable import Servable

logger = logging.getLogger("textgen.serving")

DEFAULT_MODEL_NAME = "textgen"
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
SIGNATURE_DEF_FIELD = "signature_def"
_INT64_MAX = (1 << 63) - 1

_GRPC_CODES = {code.name: code for code in grpc.StatusCode}


class ServingCore:
    """What both protocols share: the model's versions, the limits, request accounting."""

    def __init__(self, manager: ModelManager, limits: signatures.Limits, metrics: Metrics):
        self.manager = manager
        self.limits = limits
        self.metrics = metrics
        self.watchdog = Watchdog()

    @contextlib.contextmanager
    def servable(self, name: str, version: Optional[int] = None, label: str = ""):
        _refuse_label(label)
        with self.manager.acquire(name, version) as servable:
            yield servable

    def status(self, name: str, version: Optional[int] = None, label: str = ""):
        _refuse_label(label)
        return _status_response(self.manager.status(name, version))

    def predict(self, servable, signature_name, inputs, output_filter=(),
                cancel: Optional[CancelToken] = None):
        """Runs the model, cancelled after limits.request_timeout (or by `cancel`)."""
        cancel = cancel or CancelToken()
        timeout = self.limits.request_timeout
        message = (f"the request ran longer than {timeout:g} s, this server's limit "
                   "(`textgen serve --request-timeout` sets it); ask for fewer rows or "
                   "characters")
        with self.watchdog.guard(timeout, cancel, message):
            return servable.predict(signature_name, inputs, output_filter, self.limits, cancel)

    @contextlib.contextmanager
    def observe(self, api: str, entrypoint: str, model_name: str):
        """Times one request; counts it, and logs one debug line, whatever its outcome.

        Yields a dict the handler fills with details for the log line.
        """
        note = {}
        started = time.perf_counter()
        status = "OK"
        try:
            yield note
        except ServingError as err:
            status = err.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            seconds = time.perf_counter() - started
            if api == "Predict":  # TF Serving counts inference requests only
                self.metrics.count_request(model_name, status)
            self.metrics.observe_latency(model_name, api, entrypoint, status, seconds)
            details = "".join(f" {key}={value}" for key, value in note.items())
            logger.debug("%s %s model=%s%s -> %s in %.1f ms", entrypoint, api, model_name,
                         details, status, seconds * 1e3)


def _refuse_label(label: str) -> None:
    if label:
        # Labels come from a model config file, which this server does not read.
        raise invalid_argument(f"Unrecognized servable version label: {label}")


def _version_choice(spec):
    """(version or None, label or "") of a ModelSpec."""
    choice = spec.WhichOneof("version_choice")
    return (spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else "")


def _signature_def_map(servable):
    return protos.get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)


def _status_response(statuses):
    response = protos.get_model_status_pb2.GetModelStatusResponse()
    state = protos.get_model_status_pb2.ModelVersionStatus.State
    for status in statuses:
        entry = response.model_version_status.add(version=status.version,
                                                  state=state.Value(status.state))
        entry.status.error_code = CODE_NAMES.index(status.error_code)
        entry.status.error_message = status.error_message
    return response


def _metadata_fields_check(fields) -> None:
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")


# --- gRPC -------------------------------------------------------------------------------

def _grpc_call(core: ServingCore, context, api: str, model_name: str, handler):
    try:
        with core.observe(api, "GRPC", model_name) as note:
            return handler(note)
    except ServingError as err:
        context.abort(_GRPC_CODES[err.code], err.message)
    except Exception as err:  # noqa: BLE001 - reported to the caller, logged with traceback
        logger.exception("%s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")


class _Undecodable:
    """A request whose bytes do not parse as the method's message."""

    def __init__(self, reason: str):
        self.reason = reason


class _ParseErrorInterceptor(grpc.ServerInterceptor):
    """Answers requests that do not parse with INVALID_ARGUMENT, naming the reason.

    gRPC itself answers them with INTERNAL ("Exception deserializing request!"), which
    blames the server for a client's bytes (e.g. a string field that is not UTF-8).
    """

    def __init__(self, core: ServingCore):
        self._core = core
        self._handlers = {}  # method → wrapped handler (gRPC asks for each call)
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        with self._lock:
            if method in self._handlers:
                return self._handlers[method]
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler  # not cached: clients choose method names, the set must stay small
        handler = self._wrap(method, handler)
        with self._lock:
            self._handlers[method] = handler
        return handler

    def _wrap(self, method: str, handler):
        parse, behaviour = handler.request_deserializer, handler.unary_unary
        api = method.rsplit("/", 1)[-1]

        def tolerant_parse(data):
            try:
                return parse(data)
            except Exception as err:  # noqa: BLE001 - whatever the parser raises
                return _Undecodable(f"{type(err).__name__}: {err}")

        def guarded(request, context):
            if not isinstance(request, _Undecodable):
                return behaviour(request, context)

            def refuse(note):
                raise invalid_argument(f"the {api} request does not parse as a protobuf "
                                       f"message ({request.reason}); string fields such as "
                                       "model_spec.name must be UTF-8")
            return _grpc_call(self._core, context, api, "", refuse)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=tolerant_parse,
            response_serializer=handler.response_serializer)


def _required_spec(request):
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec


class PredictionServicer(protos.prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, core: ServingCore, max_message_bytes: int):
        self._core = core
        self._max_message_bytes = max_message_bytes

    def Predict(self, request, context):  # noqa: N802 - gRPC's method name
        return _grpc_call(self._core, context, "Predict", request.model_spec.name,
                          lambda note: self._predict(request, context, note))

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _grpc_call(self._core, context, "GetModelMetadata", request.model_spec.name,
                          lambda note: self._metadata(request))

    def _predict(self, request, context, note):
        spec = _required_spec(request)
        version, label = _version_choice(spec)
        with self._core.servable(spec.name, version, label) as servable:
            inputs = {}
            # A TensorProto may describe a tensor far bigger than itself (the last value
            # repeats to fill the shape): no request may expand beyond the message limit.
            budget = self._max_message_bytes
            for alias, proto in request.inputs.items():
                try:
                    inputs[alias] = protos.make_ndarray(proto, max_bytes=budget)
                except ValueError as err:
                    raise invalid_argument(f"tensor parsing error: {alias} ({err})") from None
                budget -= inputs[alias].nbytes
            # The RPC ends early when the client cancels or its deadline passes: stop the
            # model then instead of computing an answer nobody reads.
            cancel = CancelToken()

            def client_gone():
                cancel.cancel("CANCELLED", "the client cancelled the request or its deadline "
                                           "passed")
            if not context.add_callback(client_gone):
                client_gone()  # it ended before this request got a thread
            name, outputs = self._core.predict(servable, spec.signature_name, inputs,
                                               request.output_filter, cancel)
            note.update(version=servable.version, signature=name)
        response = protos.predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(protos.make_tensor_proto(array))
        return response

    def _metadata(self, request):
        spec = _required_spec(request)
        _metadata_fields_check(request.metadata_field)
        version, label = _version_choice(spec)
        with self._core.servable(spec.name, version, label) as servable:
            response = protos.get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(_signature_def_map(servable))
        return response


class ModelServicer(protos.model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (no config file here)."""

    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        def status(note):
            spec = _required_spec(request)
            version, label = _version_choice(spec)
            return self._core.status(spec.name, version, label)
        return _grpc_call(self._core, context, "GetModelStatus", request.model_spec.name, status)


# --- REST -------------------------------------------------------------------------------

# TF Serving's request paths (model_servers/http_rest_api_util.cc).
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE)
_MODEL_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE)


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def _parse_version(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    if int(text) > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(text)


class _RestHandler(http.server.BaseHTTPRequestHandler):
    server_version = "textgen-serve"
    # One request per connection, so that an idle keep-alive client never parks a pool thread,
    # and a socket timeout, so that a client that stops sending cannot hold one either.
    protocol_version = "HTTP/1.0"
    timeout = 60

    def do_GET(self):  # noqa: N802 - http.server's method name
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        logger.debug("REST %s %s", self.client_address[0], format % args)

    def _handle(self, method: str) -> None:
        core: ServingCore = self.server.core
        path = urllib.parse.urlsplit(self.path).path
        try:
            if method == "GET" and path == METRICS_PATH:
                self._send(200, core.metrics.render().encode(), "text/plain; version=0.0.4")
                return
            if not path.lower().startswith("/v1/"):
                raise _HttpError(404, f"Unknown path: {path}. The API is under /v1/models/ "
                                      f"(and the metrics at {METRICS_PATH})")
            body = self._read_body() if method == "POST" else b""
            status, doc = 200, self._route(core, method, path, body)
        except _HttpError as err:
            status, doc = err.status, {"error": str(err)}
        except ServingError as err:
            status, doc = HTTP_STATUS[err.code], {"error": err.message}
        except Exception as err:  # noqa: BLE001 - reported to the caller, logged with traceback
            logger.exception("REST %s %s failed", method, path)
            status, doc = 500, {"error": f"{type(err).__name__}: {err}"}
        self._send(status, json.dumps(doc, indent=1).encode(), "application/json")

    def _route(self, core: ServingCore, method: str, path: str, body: bytes) -> dict:
        predict = _PREDICT_PATH.fullmatch(path) if method == "POST" else None
        model = _MODEL_PATH.fullmatch(path) if method == "GET" else None
        if predict:
            name, version, label, verb = predict.groups()
            api = "Predict" if verb.lower() == "predict" else verb.capitalize()
        elif model:
            name, version, label, metadata = model.groups()
            api = "GetModelMetadata" if metadata else "GetModelStatus"
        else:
            raise invalid_argument(f"Malformed request: {method} {path}")
        name = urllib.parse.unquote(name or "")
        with core.observe(api, "REST", name) as note:
            if not name:
                raise invalid_argument("Missing model name in request.")
            version = _parse_version(version)
            label = urllib.parse.unquote(label or "")
            if api == "Predict":
                return self._predict(core, note, name, version, label, body)
            if api == "GetModelMetadata":
                return self._metadata(core, name, version, label)
            if api == "GetModelStatus":
                return _to_json(core.status(name, version, label))
            raise ServingError("UNIMPLEMENTED", f":{verb} is not implemented by this server; "
                               "textgen's signatures answer :predict")

    @staticmethod
    def _predict(core: ServingCore, note: dict, name, version, label, body: bytes) -> dict:
        with core.servable(name, version, label) as servable:
            def declared_inputs(signature_name):
                resolved = signature_name or signatures.DEFAULT_SIGNATURE
                signature_def = servable.signature_defs.get(resolved)
                if signature_def is None or resolved == signatures.INIT_OP_SIGNATURE:
                    raise invalid_argument(
                        f'Serving signature name: "{resolved}" not found in signature def')
                return signature_def.inputs

            signature_name, inputs, rows = rest.decode_predict_request(body, declared_inputs)
            resolved, outputs = core.predict(servable, signature_name, inputs)
            note.update(version=servable.version, signature=resolved,
                        format="instances" if rows else "inputs")
        return rest.encode_predict_response(outputs, rows)

    @staticmethod
    def _metadata(core: ServingCore, name, version, label) -> dict:
        with core.servable(name, version, label) as servable:
            spec = protos.model_pb2.ModelSpec(name=name)
            spec.version.value = servable.version
            return {"model_spec": _to_json(spec),
                    "metadata": {SIGNATURE_DEF_FIELD: _to_json(_signature_def_map(servable))}}

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _HttpError(411, "chunked request bodies are not supported: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise _HttpError(411, "a POST needs a Content-Length header")
        # Not str.isdigit(): that accepts "²", which int() refuses.
        if not re.fullmatch(r"[0-9]+", length):
            raise _HttpError(400, f"Content-Length {length!r} is not a number of bytes")
        length, limit = int(length), self.server.max_body_bytes
        try:
            if length > limit:
                if length <= 4 * limit:
                    # Read it off the socket: closing on unread data makes the client see a
                    # connection reset instead of this answer.
                    remaining = length
                    while remaining > 0:
                        chunk = self.rfile.read(min(1 << 16, remaining))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                raise _HttpError(413, f"the request body has {length} bytes, more than this "
                                      f"server's limit of {limit} (textgen serve "
                                      "--max-message-mb)")
            body = self.rfile.read(length)
        except TimeoutError:
            raise _HttpError(408, f"the request body did not arrive within {self.timeout} s "
                                  "of the last bytes received") from None
        if len(body) < length:
            raise _HttpError(400, f"the request body ended after {len(body)} of the "
                                  f"{length} bytes its Content-Length announced")
        return body

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _PooledHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Serves each connection on a bounded thread pool (stdlib's mixin spawns one per request)."""

    def __init__(self, address, core: ServingCore, pool: futures.ThreadPoolExecutor,
                 max_body_bytes: int):
        self.core = core
        self.pool = pool
        self.max_body_bytes = max_body_bytes
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RestHandler)

    def process_request(self, request, client_address):
        self.pool.submit(self.process_request_thread, request, client_address)


# --- the server -------------------------------------------------------------------------

def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """A TF-Serving-compatible server for the versions of one model under `model_dir`.

    Args:
      model_dir: the base path holding <version>/ SavedModels (the Pusher's directory).
      port, rest_port: 0 picks a free port; rest_port None disables REST.
      poll_seconds: how often model_dir is polled for versions (0: only at start).
      version: serve this version only (None: the latest).
      limits: server-side bounds on requests (num_chars, batch × characters, run time).
      max_message_bytes: largest gRPC message and REST body accepted or sent.
      num_threads: request threads per protocol (TF Serving's default: 4 per CPU).
    """

    def __init__(self, model_dir: str, model_name: str = DEFAULT_MODEL_NAME,
                 host: str = "127.0.0.1", port: int = 8500, rest_port: Optional[int] = 8501,
                 poll_seconds: float = 1.0, version: Optional[int] = None,
                 limits: signatures.Limits = signatures.DEFAULT_LIMITS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 num_threads: Optional[int] = None):
        self.model_dir = model_dir
        self.model_name = model_name
        self.host = host
        self.port = port
        self.rest_port = rest_port
        self.metrics = Metrics()
        self.manager = ModelManager(model_name, model_dir, Servable, poll_seconds, version,
                                    on_load_attempt=self.metrics.count_load)
        self.core = ServingCore(self.manager, limits, self.metrics)
        self._max_message_bytes = max_message_bytes
        self._num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self._grpc = None
        self._http = None
        self._http_pool = None

    @property
    def grpc_target(self) -> str:
        return _host_port(self.host, self.port)

    @property
    def rest_url(self) -> Optional[str]:
        return None if self.rest_port is None else f"http://{_host_port(self.host, self.rest_port)}"

    def start(self) -> "Server":
        """Loads the model, then listens; OSError if a port cannot be bound."""
        self.manager.start()
        try:
            self._start_grpc()
            if self.rest_port is not None:
                self._start_rest()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="grpc"),
            interceptors=[_ParseErrorInterceptor(self.core)],
            options=[("grpc.so_reuseport", 0),  # a second server must not share the port
                     ("grpc.max_receive_message_length", self._max_message_bytes),
                     ("grpc.max_send_message_length", self._max_message_bytes)])
        protos.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self._max_message_bytes), self._grpc)
        protos.model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core), self._grpc)
        try:
            self.port = self._grpc.add_insecure_port(_host_port(self.host, self.port))
        except RuntimeError:
            raise OSError(errno.EADDRINUSE, f"cannot listen on {self.grpc_target} for gRPC "
                          "(in use, or not an address of this machine)") from None
        self._grpc.start()

    def _start_rest(self) -> None:
        self._http_pool = futures.ThreadPoolExecutor(self._num_threads, thread_name_prefix="rest")
        try:
            self._http = _PooledHTTPServer((self.host, self.rest_port), self.core,
                                           self._http_pool, self._max_message_bytes)
        except OSError as err:
            raise OSError(err.errno, f"cannot listen on {_host_port(self.host, self.rest_port)} "
                          f"for REST ({err.strerror})") from None
        self.rest_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="rest-accept", daemon=True).start()

    def stop(self, grace: float = 5.0) -> None:
        """Stops listening, lets in-flight requests finish (up to `grace` s), unloads."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_pool is not None:
            self._http_pool.shutdown(wait=True)
            self._http_pool = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        self.core.watchdog.close()
        self.manager.stop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
