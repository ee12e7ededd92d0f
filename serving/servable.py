"""One loaded model version, called the way TF Serving's Predict calls a SavedModel."""
import logging
import threading
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.python.eager import cancellation

from serving import protos, signatures
from serving.deadlines import CancelToken
from serving.errors import ServingError, code_of

# TensorFlow hands a function call its cancellation manager through one process-wide
# variable (tensorflow/python/eager/cancellation.py, read by Context.call_function), so
# with concurrent requests one request's timeout would cancel the others' work, and a
# version loading meanwhile. Each request thread sets its own here instead; code that uses
# TensorFlow's own CancellationManagerContext still sees the process-wide one.
_per_thread = threading.local()
_process_wide_context = cancellation.context


def _cancellation_context():
    return getattr(_per_thread, "manager", None) or _process_wide_context()


cancellation.context = _cancellation_context

logger = logging.getLogger("textgen.serving")


class Servable:
    """A SavedModel version loaded with TensorFlow, with the SignatureDefs TF Serving sees."""

    def __init__(self, path: str, version: int):
        self.path = path
        self.version = version
        # From saved_model.pb rather than the loaded functions: the `defaults` map lives
        # only in the SignatureDefs, and TF Serving answers metadata requests with them.
        self.signature_defs = signatures.read_signature_defs(path)
        try:
            self._model = tf.saved_model.load(path, tags=[signatures.SERVE_TAG])
        except Exception as err:  # noqa: BLE001 - TF raises many types for a broken version
            raise ServingError(_load_error_code(err), f"{path}: cannot load the SavedModel "
                               f"({_first_line(err)}); re-export or re-push this version"
                               ) from None
        # The loaded model needs no files from here on (the vocabulary is baked into the
        # graph), so removing the version's directory cannot break requests.
        self._functions = dict(self._model.signatures)
        self._warm_up()

    def _warm_up(self) -> None:
        """Calls each signature once, as TF Serving's warm-up requests do: a signature's
        first call builds and optimises its graph (about a second), which would otherwise
        fall on the first requests after a new version takes over."""
        for name, signature_def in self.signature_defs.items():
            if name == signatures.INIT_OP_SIGNATURE:
                continue
            inputs = {alias: _smallest_valid(info) for alias, info in
                      signature_def.inputs.items() if alias not in signature_def.defaults}
            try:
                self.predict(name, inputs)
            except (ServingError, ValueError) as err:
                # Some signatures (e.g. scoring serialized examples) refuse placeholder
                # input; most of their graph has been built by then all the same.
                logger.debug("warm-up of %s version %d, signature %s: %s", self.path,
                             self.version, name, err)

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Iterable[str] = (),
                limits: signatures.Limits = signatures.DEFAULT_LIMITS,
                cancel: Optional[CancelToken] = None) -> Tuple[str, Dict[str, np.ndarray]]:
        """Runs one signature; returns (resolved signature name, {output: array}).

        Omitted inputs take the SignatureDef's defaults (a loaded signature cannot omit
        them itself). Cancelling `cancel` stops the graph between two of its ops and
        raises ServingError with the token's code. Raises ServingError with TF Serving's
        status codes.
        """
        name, signature_def = signatures.find(self.signature_defs, signature_name)
        function = self._functions.get(name)
        if function is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        wanted = signatures.output_names(signature_def, output_filter)
        feeds = signatures.prepare_inputs(name, signature_def, inputs, limits)
        if cancel is not None:
            _per_thread.manager = cancellation.CancellationManager()
            cancel.on_cancel(_per_thread.manager.start_cancel)
        try:
            result = function(**{
                alias: tf.constant(value, tf.as_dtype(signature_def.inputs[alias].dtype))
                for alias, value in feeds.items()})
        except tf.errors.OpError as err:
            if isinstance(err, tf.errors.CancelledError) and cancel is not None \
                    and cancel.cancelled:
                raise ServingError(cancel.code, cancel.message) from None
            raise ServingError(code_of(err), _graph_error_text(err.message)) from None
        finally:
            _per_thread.manager = None
        return name, {alias: result[alias].numpy() for alias in wanted}


def _smallest_valid(info) -> np.ndarray:
    """One row of an input: "a" for strings, zeros for numbers (greedy, no characters)."""
    shape = [] if info.tensor_shape.unknown_rank else \
        [1 if d.size < 0 else d.size for d in info.tensor_shape.dim]
    np_type = protos.numpy_type(info.dtype)
    if np_type is object:
        return np.full(shape, b"a", dtype=object)
    return np.zeros(shape, np_type)


def _graph_error_text(message: str) -> str:
    """The assert's own text, without TensorFlow's node and op decorations."""
    start = message.find("assertion failed:")
    text = message[start:] if start >= 0 else message
    return text.split("\n\t [[")[0].strip()


def _load_error_code(error: BaseException) -> str:
    if isinstance(error, tf.errors.OpError):
        return code_of(error)
    if isinstance(error, FileNotFoundError):  # e.g. the variables/ folder is missing
        return "NOT_FOUND"
    if isinstance(error, (DecodeError, IndexError, EOFError)):  # truncated or garbled files
        return "DATA_LOSS"
    return "UNKNOWN"


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0]
