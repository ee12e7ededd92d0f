"""One loaded model version, called the way TF Serving's Predict calls a SavedModel."""
import logging
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from models import features
from serving import protos, signatures, tf_cancellation, warmup
from serving.batching import Batcher
from serving.deadlines import CancelToken
from serving.errors import ServingError, code_of
from serving.settings import DEFAULT_LIMITS, GENERATE_CHUNK_CHARS, BatchingParameters, Limits
from serving.stepping import StepScheduler

logger = logging.getLogger("textgen.serving")


class Servable:
    """A SavedModel version loaded with TensorFlow, with the SignatureDefs TF Serving sees."""

    def __init__(self, path: str, version: int,
                 batching: Optional[BatchingParameters] = None,
                 generate_chunk: int = GENERATE_CHUNK_CHARS):
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
        # Started after the warm-up, which runs each signature alone.
        self.batcher: Optional[Batcher] = None
        self.stepper: Optional[StepScheduler] = None
        self._warm_up()
        if batching is not None:
            self.batcher = Batcher(batching, self._call, name=str(version))
            # Exports from before the `resume` signature: their `generate` calls are merged.
            if generate_chunk > 0 and features.RESUME_SIGNATURE in self._functions:
                self.stepper = StepScheduler(
                    batching, lambda feeds, cancel: self._call(features.RESUME_SIGNATURE,
                                                               feeds, cancel),
                    signatures.state_size(self.signature_defs), generate_chunk,
                    name=str(version))

    def _warm_up(self) -> None:
        """Runs the SavedModel's warm-up requests, as TF Serving does before a version
        becomes AVAILABLE: a signature's first call builds and optimises its graph (about
        a second), which would otherwise fall on the first requests after a new version
        takes over. A failing warm-up request fails the load (ServingError). Exports
        without the file (older ones) get one placeholder call per signature instead."""
        if warmup.replay(self.path, lambda name, inputs: self.predict(name, inputs)):
            return
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
                output_filter: Iterable[str] = (), limits: Limits = DEFAULT_LIMITS,
                cancel: Optional[CancelToken] = None) -> Tuple[str, Dict[str, np.ndarray]]:
        """Runs one signature; returns (resolved signature name, {output: array}).

        Omitted inputs take the SignatureDef's defaults (a loaded signature cannot omit
        them itself). With batching on, `generate` requests share the model's steps
        (serving/stepping.py) and any other signature whose inputs are all batch-major runs
        merged with concurrent requests (serving/batching.py). Cancelling `cancel` ends the
        request with the token's code (and stops the graph, unless other requests share
        the call).
        Raises ServingError with TF Serving's status codes.
        """
        name, signature_def = signatures.find(self.signature_defs, signature_name)
        if name not in self._functions:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        wanted = signatures.output_names(signature_def, output_filter)
        feeds = signatures.prepare_inputs(name, signature_def, inputs, limits)
        cancel = cancel or CancelToken()
        rows = signatures.batch_rows(signature_def, feeds)
        if self.stepper is not None and name == features.GENERATE_SIGNATURE:
            outputs = self.stepper.submit(feeds, rows, cancel)
        elif self.batcher is not None and rows is not None:
            outputs = self.batcher.submit(name, feeds, rows, cancel)
        else:
            outputs = self._call(name, feeds, cancel)
        return name, {alias: outputs[alias] for alias in wanted}

    def close(self) -> None:
        """Stops batching (what still waits is answered UNAVAILABLE); called at unload."""
        if self.batcher is not None:
            self.batcher.close()
        if self.stepper is not None:
            self.stepper.close()

    def _call(self, name: str, feeds: Mapping[str, np.ndarray],
              cancel: CancelToken) -> Dict[str, np.ndarray]:
        """One call of the loaded signature function; every output, as numpy."""
        declared = self.signature_defs[name].inputs
        try:
            result = tf_cancellation.call(self._functions[name], {
                alias: tf.constant(value, tf.as_dtype(declared[alias].dtype))
                for alias, value in feeds.items()}, cancel)
        except tf.errors.OpError as err:
            if isinstance(err, tf.errors.CancelledError) and cancel.cancelled:
                raise ServingError(cancel.code, cancel.message) from None
            raise ServingError(code_of(err), _graph_error_text(err.message)) from None
        return {alias: value.numpy() for alias, value in result.items()}


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
