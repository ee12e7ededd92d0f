"""The train split as one text in corpus order, and the windows cut anew from it each epoch."""
import random

import numpy as np
import pytest
import tensorflow as tf

from models import corpus_text, features

T = 5  # characters a window, less one


def _files():
    """Two spans' files as the ExampleGen cuts them: windows of T + 1, a short last one."""
    rng = np.random.default_rng(0)
    return {(span, index): rng.integers(2, 40, size=length)
            for (span, index), length in {(3, 0): 26, (3, 1): 13, (20240101, 0): 19}.items()}


def _write_shuffled(path, files, with_position=True):
    records = [(text[i:i + T + 1], (span, index, i // (T + 1)))
               for (span, index), text in files.items() for i in range(0, len(text), T + 1)]
    random.Random(1).shuffle(records)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ids, position in records:
            feature = {features.IDS_KEY: tf.train.Feature(
                int64_list=tf.train.Int64List(value=ids))}
            if with_position:
                feature[features.POSITION_KEY] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=position))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def _read(path, spec):
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx.components.trainer import fn_args_utils
    from tfx_bsl.public import tfxio
    accessor = fn_args_utils.DataAccessor(
        tf_dataset_factory=lambda files, options, schema: tfxio.TFExampleRecord(
            file_pattern=files, schema=schema).TensorFlowDataset(options),
        record_batch_factory=None, data_view_decode_fn=None)
    return corpus_text.read_in_corpus_order([str(path)], accessor,
                                            schema_utils.schema_from_feature_spec(spec),
                                            "train.carry_state")


def test_shuffled_records_are_read_back_in_corpus_order(tmp_path):
    files = _files()
    _write_shuffled(tmp_path / "train.tfrecord", files)
    text, seq_length = _read(tmp_path / "train.tfrecord", {
        features.IDS_KEY: tf.io.VarLenFeature(tf.int64),
        features.POSITION_KEY: tf.io.FixedLenFeature([3], tf.int64)})
    # Span by span (3 before 20240101), file by file: each file's text whole again.
    assert (text == np.concatenate([files[3, 0], files[3, 1], files[20240101, 0]])).all()
    assert seq_length == T


def test_records_without_their_position_are_refused_by_name(tmp_path):
    _write_shuffled(tmp_path / "train.tfrecord", _files(), with_position=False)
    with pytest.raises(ValueError, match="no 'position' feature.*run the pipeline again"):
        _read(tmp_path / "train.tfrecord", {features.IDS_KEY: tf.io.VarLenFeature(tf.int64)})


def _epochs(dataset, count):
    """`count` iterations of the dataset (Keras iterates it anew each epoch): each one's
    windows as rows of [inputs' first character, ..., targets' last]."""
    return [np.concatenate([np.concatenate([x, y[:, -1:]], axis=1) for x, y in
                            dataset.as_numpy_iterator()]) for _ in range(count)]


def test_each_epoch_cuts_the_text_anew_into_whole_windows_from_one_offset():
    text = np.arange(2, 103)  # every character its own id: a window's values are its place
    epochs = _epochs(corpus_text.shifted_windows(text, 4, T, seed=3, repeat=False), 6)
    offsets = set()
    for windows in epochs:
        # Windows of T + 1 consecutive characters of the text (targets = inputs shifted by one).
        assert windows.shape == (len(text) // T - 1, T + 1)
        assert (np.diff(windows, axis=1) == 1).all()
        # One offset an epoch: the windows tile the text from it, each once, none overlapping
        # but by the one character a window's last target shares with the next one's input.
        starts = np.sort(windows[:, 0] - text[0])
        assert (np.diff(starts) == T).all() and starts[-1] + T < len(text)
        offsets.add(int(starts[0]))
        assert starts[0] < T
    # New boundaries from epoch to epoch, and a new order of the windows.
    assert len(offsets) > 1
    assert any((a[:, 0] != b[:, 0]).any() for a, b in zip(epochs, epochs[1:]))


def test_the_same_seed_cuts_the_same_epochs():
    text = np.random.default_rng(0).integers(2, 40, size=200)
    first, second = (_epochs(corpus_text.shifted_windows(text, 8, T, seed=11, repeat=False), 3)
                     for _ in range(2))
    assert all((a == b).all() for a, b in zip(first, second))


def test_too_little_text_for_two_windows_is_refused_with_what_to_change():
    with pytest.raises(ValueError, match=r"9 characters.*seq_length = 5.*--seq-length"):
        corpus_text.shifted_windows(np.arange(9), 4, T, seed=0, repeat=False)


def test_the_flag_sets_it():
    import textgen_cli
    from pipeline import cli, configs
    assert configs.Config().train.shift_windows is False
    args = textgen_cli.build_parser().parse_args(["run", "--shift-windows"])
    assert cli.config_from_args(args, preset="default").train.shift_windows is True
    with pytest.raises(configs.ConfigError, match="train.shift_windows.*true or false"):
        configs.load(overrides={"train": {"shift_windows": 1}})


def test_the_train_input_is_chosen_once_for_trainer_and_recipe_line():
    from models.settings import (CARRIED_STATE, RECORDS, SHIFTED_WINDOWS, TrainSettings,
                                 train_input)
    assert train_input(TrainSettings(), "stream") == RECORDS
    assert train_input(TrainSettings(shift_windows=True), "stream") == SHIFTED_WINDOWS
    # Carried state reads the text in order: shifting would break its streams.
    assert train_input(TrainSettings(carry_state=True, shift_windows=True),
                       "stream") == CARRIED_STATE
    # A line is read whole, whatever a preset turned on.
    assert train_input(TrainSettings(shift_windows=True), "lines") == RECORDS
