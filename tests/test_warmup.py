"""Warm-up requests, TF Serving's way: the export writes one per signature into
assets.extra/tf_serving_warmup_requests, and `textgen serve` replays them when it loads a
version, before the version is AVAILABLE; a version whose warm-up fails never serves."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from models import features, warmup as model_warmup
from serving import protos, warmup
from serving.errors import ServingError
from serving.manager import AVAILABLE, END, ModelManager
from serving.servable import Servable


def read_logs(model_dir):
    path = model_warmup.path(model_dir)
    return [protos.prediction_log_pb2.PredictionLog.FromString(r)
            for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def test_the_export_writes_one_request_per_signature_each_answered_by_the_model(tiny_model_dir):
    logs = read_logs(tiny_model_dir)
    assert all(log.WhichOneof("log_type") == "predict_log" for log in logs)
    by_signature = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                    for log in logs}
    loaded = tf.saved_model.load(tiny_model_dir)
    assert sorted(by_signature) == sorted(loaded.signatures)
    for name, request in by_signature.items():
        function = loaded.signatures[name]
        # Every input is given (nothing left to a server's defaults), one row each.
        assert sorted(request.inputs) == sorted(function.structured_input_signature[1])
        inputs = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in
                  request.inputs.items()}
        assert {int(v.shape[0]) for v in inputs.values()} == {1}
        outputs = function(**inputs)
        assert outputs, name
    generated = loaded.signatures[features.GENERATE_SIGNATURE](**{
        alias: tf.make_ndarray(proto)
        for alias, proto in by_signature[features.GENERATE_SIGNATURE].inputs.items()})
    assert len(generated["completion"].numpy()[0].decode()) == model_warmup.WARMUP_CHARS


def with_warmup(tmp_path, model_dir, change):
    """A copy of model_dir whose warm-up file holds the export's requests, changed."""
    copy = str(tmp_path / "1")
    shutil.copytree(model_dir, copy)
    logs = change(read_logs(copy))
    with tf.io.TFRecordWriter(model_warmup.path(copy)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return copy


def negative_temperature(logs):
    for log in logs:
        request = log.predict_log.request
        if request.model_spec.signature_name == features.GENERATE_SIGNATURE:
            request.inputs["temperature"].CopyFrom(tf.make_tensor_proto(
                np.array([-1.0], np.float32)))
    return logs


def test_loading_replays_the_requests_and_a_failing_one_fails_the_load(tmp_path, tiny_model_dir):
    broken = with_warmup(tmp_path, tiny_model_dir, negative_temperature)
    with pytest.raises(ServingError) as raised:
        Servable(broken, 1)
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "'generate'" in raised.value.message and "temperature" in raised.value.message


def test_a_version_whose_warmup_fails_never_replaces_the_one_serving(tmp_path, tiny_model_dir):
    base = tmp_path / "base"
    base.mkdir()
    shutil.copytree(tiny_model_dir, base / "1")
    manager = ModelManager("m", str(base), lambda path, v: Servable(path, v), poll_seconds=0)
    manager.start()
    try:
        broken = with_warmup(tmp_path, tiny_model_dir, negative_temperature)
        os.rename(broken, base / "2")
        manager.poll()
        status = {s.version: s for s in manager.status("m")}
        assert status[1].state == AVAILABLE
        assert status[2].state == END and status[2].error_code == "INVALID_ARGUMENT"
        assert "warm-up request" in status[2].error_message
        assert manager.served_versions() == [1]
    finally:
        manager.stop()


def test_more_records_than_tf_serving_allows_or_another_log_type_fail_the_load(
        tmp_path, tiny_model_dir):
    too_many = with_warmup(tmp_path / "a", tiny_model_dir,
                           lambda logs: logs * (model_warmup.MAX_RECORDS // len(logs) + 1))
    with pytest.raises(ServingError, match="exceeds the maximum"):
        list(warmup.requests(too_many))

    def classify(logs):
        log = protos.prediction_log_pb2.PredictionLog()
        log.classify_log.SetInParent()
        return logs + [log]

    other = with_warmup(tmp_path / "b", tiny_model_dir, classify)
    with pytest.raises(ServingError) as raised:
        Servable(other, 1)
    assert raised.value.code == "UNIMPLEMENTED" and "classify_log" in raised.value.message


def test_a_model_without_the_file_loads_with_no_requests_replayed(tmp_path, tiny_model_dir):
    copy = tmp_path / "1"
    shutil.copytree(tiny_model_dir, copy)
    os.remove(model_warmup.path(str(copy)))
    assert list(warmup.requests(str(copy))) == []
    servable = Servable(str(copy), 1)
    _, out = servable.predict(features.GENERATE_SIGNATURE, {
        "prompts": np.array([b"ab"], object), "num_chars": np.array([3], np.int32),
        "temperature": np.array([0.0], np.float32)})
    assert len(out["completion"][0]) == 3
