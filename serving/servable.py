"""One loaded model version, called the way TF Serving's Predict calls a SavedModel."""
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np
import tensorflow as tf

from serving import signatures
from serving.errors import ServingError, code_of


class Servable:
    """A SavedModel version loaded with TensorFlow, with the SignatureDefs TF Serving sees."""

    def __init__(self, path: str, version: int):
        self.path = path
        self.version = version
        # From saved_model.pb rather than the loaded functions: the `defaults` map lives
        # only in the SignatureDefs, and TF Serving answers metadata requests with them.
        self.signature_defs = signatures.read_signature_defs(path)
        self._model = tf.saved_model.load(path, tags=[signatures.SERVE_TAG])
        self._functions = dict(self._model.signatures)

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Iterable[str] = (),
                limits: signatures.Limits = signatures.DEFAULT_LIMITS
                ) -> Tuple[str, Dict[str, np.ndarray]]:
        """Runs one signature; returns (resolved signature name, {output: array}).

        Omitted inputs take the SignatureDef's defaults (a loaded signature cannot omit
        them itself). Raises ServingError with TF Serving's status codes.
        """
        name, signature_def = signatures.find(self.signature_defs, signature_name)
        function = self._functions.get(name)
        if function is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        wanted = signatures.output_names(signature_def, output_filter)
        feeds = signatures.prepare_inputs(name, signature_def, inputs, limits)
        try:
            result = function(**{
                alias: tf.constant(value, tf.as_dtype(signature_def.inputs[alias].dtype))
                for alias, value in feeds.items()})
        except tf.errors.OpError as err:
            raise ServingError(code_of(err), _graph_error_text(err.message)) from None
        return name, {alias: result[alias].numpy() for alias in wanted}


def _graph_error_text(message: str) -> str:
    """The assert's own text, without TensorFlow's node and op decorations."""
    start = message.find("assertion failed:")
    text = message[start:] if start >= 0 else message
    return text.split("\n\t [[")[0].strip()
