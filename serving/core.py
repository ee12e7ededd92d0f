"""What the gRPC and REST APIs share: the model's versions, limits, request accounting,
and the answers to status and metadata requests in TF Serving's messages."""
import contextlib
import logging
import time
from typing import Optional

from serving import protos
from serving.deadlines import CancelToken, Watchdog
from serving.errors import CODE_NAMES, ServingError, invalid_argument
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.settings import Limits

logger = logging.getLogger("textgen.serving")

SIGNATURE_DEF_FIELD = "signature_def"


class ServingCore:
    """What both protocols share: the model's versions, the limits, request accounting."""

    def __init__(self, manager: ModelManager, limits: Limits, metrics: Metrics):
        self.manager = manager
        self.limits = limits
        self.metrics = metrics
        self.watchdog = Watchdog()

    @contextlib.contextmanager
    def servable(self, name: str, version: Optional[int] = None, label: str = ""):
        refuse_label(label)
        with self.manager.acquire(name, version) as servable:
            yield servable

    def status(self, name: str, version: Optional[int] = None, label: str = ""):
        refuse_label(label)
        return status_response(self.manager.status(name, version))

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


def refuse_label(label: str) -> None:
    if label:
        # Labels come from a model config file, which this server does not read.
        raise invalid_argument(f"Unrecognized servable version label: {label}")


def version_choice(spec):
    """(version or None, label or "") of a ModelSpec."""
    choice = spec.WhichOneof("version_choice")
    return (spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else "")


def signature_def_map(servable):
    return protos.get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)


def status_response(statuses):
    response = protos.get_model_status_pb2.GetModelStatusResponse()
    state = protos.get_model_status_pb2.ModelVersionStatus.State
    for status in statuses:
        entry = response.model_version_status.add(version=status.version,
                                                  state=state.Value(status.state))
        entry.status.error_code = CODE_NAMES.index(status.error_code)
        entry.status.error_message = status.error_message
    return response


def metadata_fields_check(fields) -> None:
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
