"""Replays a SavedModel's warm-up requests at load, with TF Serving's rules
(saved_model_warmup_util.cc): the file `assets.extra/tf_serving_warmup_requests` is
optional; each record is a PredictionLog run once; a record that does not parse, a log
type this server cannot run, more than 1,000 records, or a request that fails, fails the
load of the version, which then never becomes AVAILABLE.

The export writes the file (models/warmup.py, which holds TF Serving's file name and bound).
"""
import itertools
from typing import Callable, Dict, Iterator, Tuple

import numpy as np

from models import warmup as model_warmup
from serving import protos
from serving.errors import ServingError


Predict = Callable[[str, Dict[str, np.ndarray]], object]


def requests(saved_model_dir: str) -> Iterator[Tuple[str, Dict[str, np.ndarray]]]:
    """(signature name, inputs) of each warm-up record; none if the file is absent.
    Raises ServingError (INVALID_ARGUMENT, as TF Serving) for a record it cannot run."""
    import tensorflow as tf
    path = model_warmup.path(saved_model_dir)
    if not tf.io.gfile.exists(path):
        return
    try:
        # One past the bound is enough to refuse the file, whatever its size.
        records = list(itertools.islice(tf.data.TFRecordDataset(path).as_numpy_iterator(),
                                        model_warmup.MAX_RECORDS + 1))
    except tf.errors.OpError as err:
        raise ServingError("DATA_LOSS", f"{path}: cannot read the warm-up records "
                           f"({err.message.splitlines()[0]})") from None
    if len(records) > model_warmup.MAX_RECORDS:
        raise ServingError("INVALID_ARGUMENT", f"Number of warmup records exceeds the maximum "
                           f"({model_warmup.MAX_RECORDS}) at {path}")
    for number, record in enumerate(records, 1):
        log = protos.prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise ServingError("INVALID_ARGUMENT", f"{path}: warm-up record {number} is not a "
                               "PredictionLog") from None
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ServingError("UNIMPLEMENTED", f"{path}: warm-up record {number} is a "
                               f"{kind or 'empty log'}; this server runs predict_log only")
        request = log.predict_log.request
        try:
            inputs = {alias: protos.make_ndarray(proto) for alias, proto in request.inputs.items()}
        except ValueError as err:
            raise ServingError("INVALID_ARGUMENT", f"{path}: warm-up record {number}, {err}"
                               ) from None
        yield request.model_spec.signature_name, inputs


def replay(saved_model_dir: str, predict: Predict) -> int:
    """Runs every warm-up request through predict(signature, inputs); returns how many.
    The first failure raises ServingError naming the record and the signature."""
    count = 0
    for count, (signature, inputs) in enumerate(requests(saved_model_dir), 1):
        try:
            predict(signature, inputs)
        except ServingError as err:
            raise ServingError(err.code, f"warm-up request {count} (signature "
                               f"{signature or 'serving_default'!r}) failed: {err.message}"
                               ) from None
    return count
