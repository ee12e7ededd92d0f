"""TF Serving's gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), on the servicer classes tensorflow-serving-api ships, so the wire
protocol is TF Serving's own; errors carry its status codes."""
import logging
import threading

import grpc

from serving import protos
from serving.core import (SIGNATURE_DEF_FIELD, ServingCore, metadata_fields_check,
                          signature_def_map, version_choice)
from serving.deadlines import CancelToken
from serving.errors import ServingError, invalid_argument

logger = logging.getLogger("textgen.serving")

_GRPC_CODES = {code.name: code for code in grpc.StatusCode}


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


class ParseErrorInterceptor(grpc.ServerInterceptor):
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
        version, label = version_choice(spec)
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
        metadata_fields_check(request.metadata_field)
        version, label = version_choice(spec)
        with self._core.servable(spec.name, version, label) as servable:
            response = protos.get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(servable))
        return response


class ModelServicer(protos.model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (no config file here)."""

    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request, context):  # noqa: N802
        def status(note):
            spec = _required_spec(request)
            version, label = version_choice(spec)
            return self._core.status(spec.name, version, label)
        return _grpc_call(self._core, context, "GetModelStatus", request.model_spec.name, status)
