"""Warm start from the newest served model: same characters (any order) and shape only."""
import json
import os

import numpy as np
import pytest

from conftest import TINY_VOCAB, build_tiny_model, export_tiny_model
from models import export, features, model as char_model, warm_start

SHAPE = {"embedding_dim": 8, "rnn_units": 16, "rnn_layers": 1, "cell": "gru"}


@pytest.fixture(scope="module")
def serving_dir(tmp_path_factory):
    """Version 7: a tiny model over TINY_VOCAB; version 3 older; version 9 without model
    info (pushed by older code), which warm start must skip."""
    base = tmp_path_factory.mktemp("serving")
    export_tiny_model(base / "7", seed=1)
    export_tiny_model(base / "3", seed=2)
    os.makedirs(base / "9")
    return str(base)


def test_export_records_vocabulary_and_shape(serving_dir):
    info = warm_start.read_model_info(os.path.join(serving_dir, "7"))
    assert info == {"vocab": TINY_VOCAB, "mode": "stream", "model": SHAPE}


def test_the_newest_version_with_model_info_is_the_start(serving_dir):
    assert warm_start.latest_served(serving_dir) == (7, os.path.join(serving_dir, "7"))
    assert warm_start.latest_served(os.path.join(serving_dir, "missing")) is None


def test_same_characters_reordered_carry_the_weights_over(serving_dir):
    import tensorflow as tf
    reordered = list(reversed(TINY_VOCAB))
    report = warm_start.plan(reordered, SHAPE, "stream", warm_start.latest_served(serving_dir))
    assert report["warm_start"] and report["version"] == 7 and "reordered" in report["reason"]
    new = build_tiny_model(reordered, seed=5)
    warm_start.load_weights(new, reordered, report["from"])
    old = tf.saved_model.load(report["from"])
    # Scoring the same text through both gives the same likelihood: the ids differ,
    # the function is the same.
    examples = tf.constant([tf.train.Example(features=tf.train.Features(feature={
        features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))
    })).SerializeToString() for t in ("abc dé\nfgh:", "hag")])
    old_nll = old.signatures[features.SCORE_SIGNATURE](examples=examples)[features.NLL_OUTPUT]
    new_nll = export.Generator(new, reordered, "stream").score(examples)[features.NLL_OUTPUT]
    np.testing.assert_allclose(new_nll.numpy(), old_nll.numpy(), rtol=1e-5)
    # Embedding row of a character follows the character.
    old_keras = build_tiny_model(TINY_VOCAB)
    warm_start.load_weights(old_keras, TINY_VOCAB, report["from"])
    new_row = new.get_layer("embedding").get_weights()[0][features.NUM_RESERVED_IDS]
    old_row = old_keras.get_layer("embedding").get_weights()[0][
        TINY_VOCAB.index(reordered[0]) + features.NUM_RESERVED_IDS]
    np.testing.assert_array_equal(new_row, old_row)


def test_a_grown_vocabulary_starts_fresh_and_says_why(serving_dir):
    grown = TINY_VOCAB + ["z"]
    report = warm_start.plan(grown, SHAPE, "stream", warm_start.latest_served(serving_dir))
    assert not report["warm_start"]
    assert "grew by 1 character(s) since version 7 ('z')" in report["reason"]
    changed = TINY_VOCAB[:-1] + ["z"]
    report = warm_start.plan(changed, SHAPE, "stream", warm_start.latest_served(serving_dir))
    assert not report["warm_start"] and "grew by 1" in report["reason"]
    assert "1 gone" in report["reason"]


def test_a_smaller_vocabulary_keeps_the_rows_of_the_remaining_characters(serving_dir):
    served = warm_start.latest_served(serving_dir)
    fewer = [c for c in reversed(TINY_VOCAB) if c not in "é:"]
    report = warm_start.plan(fewer, SHAPE, "stream", served)
    assert report["warm_start"]
    assert f"{len(fewer)} of its {len(TINY_VOCAB)} characters" in report["reason"]
    assert "':'" in report["reason"] and "'é'" in report["reason"]
    new = build_tiny_model(fewer, seed=5)
    warm_start.load_weights(new, fewer, served[1])
    old = build_tiny_model(TINY_VOCAB)
    warm_start.load_weights(old, TINY_VOCAB, served[1])
    old_id = {c: i + features.NUM_RESERVED_IDS for i, c in enumerate(TINY_VOCAB)}
    rows = [0, 1] + [old_id[c] for c in fewer]
    np.testing.assert_array_equal(new.get_layer("embedding").get_weights()[0],
                                  old.get_layer("embedding").get_weights()[0][rows])
    kernel, bias = old.get_layer("logits").get_weights()
    new_kernel, new_bias = new.get_layer("logits").get_weights()
    np.testing.assert_array_equal(new_kernel, kernel[:, rows])
    np.testing.assert_array_equal(new_bias, bias[rows])
    np.testing.assert_array_equal(new.get_layer("rnn_0").get_weights()[0],
                                  old.get_layer("rnn_0").get_weights()[0])


def test_another_shape_or_mode_starts_fresh(serving_dir):
    served = warm_start.latest_served(serving_dir)
    report = warm_start.plan(TINY_VOCAB, {**SHAPE, "rnn_units": 32}, "stream", served)
    assert not report["warm_start"] and "rnn_units 16 → 32" in report["reason"]
    report = warm_start.plan(TINY_VOCAB, SHAPE, "lines", served)
    assert not report["warm_start"] and "stream → lines" in report["reason"]


def test_nothing_served_or_switched_off(tmp_path):
    model = build_tiny_model()
    before = [w.copy() for w in model.get_weights()]
    report = warm_start.apply(model, TINY_VOCAB, SHAPE, "stream", str(tmp_path), True)
    assert not report["warm_start"] and "no blessed model" in report["reason"]
    report = warm_start.apply(model, TINY_VOCAB, SHAPE, "stream", str(tmp_path), False)
    assert "off" in report["reason"]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    json.dumps(report)  # the summary reads it back from the model run dir


def test_weights_carry_over_into_a_model_with_dropout(tmp_path):
    """Dropout has no weights and is not part of the shape: a model trained with it (or
    without it) warm-starts one with another dropout."""
    from models.settings import ModelSettings
    serving_dir = str(tmp_path / "serving")
    export.save(build_tiny_model(seed=4), TINY_VOCAB, "stream", os.path.join(serving_dir, "1"))
    new = char_model.build_model(len(TINY_VOCAB) + features.NUM_RESERVED_IDS, ModelSettings(
        embedding_dim=8, rnn_units=16, rnn_layers=1, cell="gru", dropout=0.3))
    report = warm_start.apply(new, TINY_VOCAB, char_model.shape_of(new), "stream", serving_dir,
                              enabled=True)
    assert report["warm_start"], report
    old = build_tiny_model(seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(old.get_weights(), new.get_weights()))
