"""The SavedModel's warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays this file (TFRecord of PredictionLog) when it loads a version, before
the version becomes AVAILABLE, and refuses the version if a request fails
(saved_model_warmup_util.cc); `textgen serve` does the same (serving/servable.py), and
the pipeline's InfraValidator sends the same requests to a serving process before the
Pusher may publish the model (components/infra_validator.py).

One request per signature, one row each, with the model's own characters: what a first
real request would ask, so the graphs it builds are the ones requests use.
"""
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from models import features
from models.settings import DEFAULT_SAMPLING

# TF Serving's names (WarmupConsts in saved_model_warmup_util.h).
ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving refuses a file with more
# Characters the warm-up `generate` and `resume` draw: enough to run their loops, few
# enough to keep a load quick.
WARMUP_CHARS = 8
WARMUP_SEED = 1


def path(saved_model_dir: str) -> str:
    return os.path.join(saved_model_dir, ASSETS_EXTRA, REQUESTS_FILE)


def _sample_text(vocab: List[str], mode: str) -> str:
    """A few of the corpus' most frequent characters (a line of them in lines mode)."""
    text = "".join(c for c in vocab[:12] if c != features.LINE_TERMINATOR) or vocab[0]
    return text + features.LINE_TERMINATOR if mode == "lines" else text


def inputs_by_signature(vocab: List[str], mode: str, state_size: int
                        ) -> Dict[str, Dict[str, np.ndarray]]:
    """{signature: {input alias: one-row array}}, every input given (no defaults left to
    the server, so the requests mean the same on any TF Serving version)."""
    text = _sample_text(vocab, mode)
    prompt = np.array([text[:-1] if mode == "lines" else text], object)
    example = tf.train.Example(features=tf.train.Features(feature={
        features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[text.encode("utf-8")]))})).SerializeToString()
    # The defaults a caller gets, but seeded: a warm-up draws the same text every time.
    sampling = {"temperature": np.array([DEFAULT_SAMPLING.temperature], np.float32),
                "top_k": np.array([DEFAULT_SAMPLING.top_k], np.int32),
                "top_p": np.array([DEFAULT_SAMPLING.top_p], np.float32),
                "seed": np.array([WARMUP_SEED], np.int32)}
    zeros = np.zeros([1, state_size], np.float32)
    return {
        features.ONE_STEP_SIGNATURE: {
            "chars": prompt, "states": zeros, "temperature": sampling["temperature"],
            "seed": sampling["seed"]},
        features.GENERATE_SIGNATURE: {
            "prompts": prompt, "num_chars": np.array([WARMUP_CHARS], np.int32), **sampling},
        features.RESUME_SIGNATURE: {
            "prompts": prompt, "states": zeros, "position": np.array([0], np.int32),
            "num_chars": np.array([WARMUP_CHARS], np.int32), **sampling},
        features.SCORE_SIGNATURE: {"examples": np.array([example], object)},
    }


def prediction_logs(inputs: Dict[str, Dict[str, np.ndarray]]
                    ) -> List[prediction_log_pb2.PredictionLog]:
    logs = []
    for signature, values in inputs.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        for alias, value in values.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write(saved_model_dir: str, logs: List[prediction_log_pb2.PredictionLog]) -> str:
    """Writes the records into the SavedModel; returns the file's path."""
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warm-up requests: TF Serving loads at most {MAX_RECORDS}")
    target = path(saved_model_dir)
    tf.io.gfile.makedirs(os.path.dirname(target))
    with tf.io.TFRecordWriter(target) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return target
