"""TF Serving's REST API over HTTP: `GET /v1/models/NAME[/versions/N][/metadata]`,
`POST /v1/models/NAME[/versions/N]:predict` and `GET /monitoring/prometheus/metrics`,
with TF Serving's paths, status codes and `{"error": "..."}` bodies (the JSON of
tensors is serving/rest.py's)."""
import http.server
import json
import logging
import re
import socket
import socketserver
import urllib.parse
from concurrent import futures
from typing import Optional

from google.protobuf import json_format

from serving import protos, rest, signatures
from serving.core import SIGNATURE_DEF_FIELD, ServingCore, signature_def_map
from serving.errors import HTTP_STATUS, ServingError, invalid_argument
from serving.metrics import CONTENT_TYPE, METRICS_PATH

logger = logging.getLogger("textgen.serving")

_INT64_MAX = (1 << 63) - 1

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
                self._send(200, core.metrics.render(), CONTENT_TYPE)
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
                    "metadata": {SIGNATURE_DEF_FIELD: _to_json(signature_def_map(servable))}}

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


class PooledHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
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
