"""The Trainer's run_fn as TFX calls it, in this process: the precision it trains in (and
puts back), the bf16 export against the same weights in float32, carried state from the
Transform output to an export without it, windows cut anew from the text it reads."""
import dataclasses
import random

import pytest
import tensorflow as tf
import tf_keras

from components import text_records
from models import corpus_text, export, features, model, trainer, weight_drop
from models.settings import ModelSettings, TrainSettings

SEQ_LENGTH = 10
TEXT = ("The quality of mercy is not strained; it droppeth as the gentle rain from heaven "
        "upon the place beneath. It is twice blest: it blesseth him that gives and him that "
        "takes. ") * 4
MODEL = ModelSettings(embedding_dim=8, rnn_units=16, rnn_layers=1, cell="lstm", dropout=0.0)


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """The text cut as the ExampleGen cuts it, through Transform's preprocessing_fn, its
    train records written shuffled (as Beam writes them)."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
    from models import preprocessing
    tmp = tmp_path_factory.mktemp("transformed")
    train, held_out = text_records.split_text(TEXT, "stream", SEQ_LENGTH, eval_fraction=0.2)
    splits = {name: [(record, [0, 0, i]) for i, record in enumerate(records)]
              for name, records in (("train", train), ("eval", held_out))}
    random.Random(3).shuffle(splits["train"])
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec({
        features.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string),
        features.POSITION_KEY: tf.io.FixedLenFeature([3], tf.int64)}))
    data = [{features.TEXT_KEY: [r.encode()], features.POSITION_KEY: p}
            for r, p in splits["train"]]
    with tft_beam.Context(temp_dir=str(tmp / "tmp")):
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "transform"))
    output = tft.TFTransformOutput(str(tmp / "transform"))
    for name, records in splits.items():
        out = output.transform_raw_features({
            features.TEXT_KEY: tf.constant([[r] for r, _ in records]),
            features.POSITION_KEY: tf.constant([p for _, p in records], tf.int64)})
        ids = tf.RaggedTensor.from_sparse(out[features.IDS_KEY]).to_list()
        (tmp / f"Split-{name}").mkdir()
        with tf.io.TFRecordWriter(str(tmp / f"Split-{name}" / "data.tfrecord")) as writer:
            for row, position in zip(ids, out[features.POSITION_KEY].numpy().tolist()):
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    features.IDS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=row)),
                    features.POSITION_KEY: tf.train.Feature(
                        int64_list=tf.train.Int64List(value=position))})).SerializeToString())
    vocab = [t.decode() for t in output.vocabulary_by_name(features.VOCAB_NAME)]
    train_ids = [vocab.index(c) + features.NUM_RESERVED_IDS for c in "".join(train)]
    return {"dir": tmp, "vocab": vocab, "train_ids": train_ids, "eval": held_out}


def _fn_args(data, root, train: TrainSettings):
    from tfx.components.trainer import fn_args_utils
    from tfx_bsl.public import tfxio
    (root / "model_run").mkdir(parents=True)  # as TFX's executor does
    return fn_args_utils.FnArgs(
        train_files=[str(data["dir"] / "Split-train" / "*")],
        eval_files=[str(data["dir"] / "Split-eval" / "*")],
        transform_output=str(data["dir"] / "transform"),
        serving_model_dir=str(root / "model"), model_run_dir=str(root / "model_run"),
        custom_config={"model": dataclasses.asdict(MODEL), "train": dataclasses.asdict(train),
                       "mode": "stream", "serving_dir": str(root / "none"),
                       "code_fingerprint": "test"},
        data_accessor=fn_args_utils.DataAccessor(
            tf_dataset_factory=lambda files, options, schema: tfxio.TFExampleRecord(
                file_pattern=files, schema=schema).TensorFlowDataset(options),
            record_batch_factory=None, data_view_decode_fn=None))


def _train(**settings):
    return TrainSettings(epochs=1, batch_size=4, learning_rate=0.01, warm_start=False,
                         **settings)


class _Spy:
    """trainer.fit as run_fn calls it, noting the policy and the model it trains."""

    def __init__(self, fail=False):
        self.fail, self.seen = fail, {}

    def __call__(self, trained, *args, **kwargs):
        self.seen["policy"] = tf_keras.mixed_precision.global_policy().name
        self.seen["rnn_dtype"] = trained.get_layer("rnn_0").compute_dtype
        if self.fail:
            raise RuntimeError("training failed")
        record = FIT(trained, *args, **kwargs)
        self.seen["weights"] = trained.get_weights()
        return record


FIT = trainer.fit


@pytest.fixture(scope="module")
def bf16_run(transformed, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    spy = _Spy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "fit", spy)
        trainer.run_fn(_fn_args(transformed, root, _train(precision="mixed_bfloat16")))
    return {"root": root, "seen": spy.seen}


def test_run_fn_trains_in_the_chosen_precision_and_puts_float32_back(bf16_run, transformed,
                                                                      tmp_path, monkeypatch):
    assert bf16_run["seen"]["policy"] == "mixed_bfloat16"
    assert bf16_run["seen"]["rnn_dtype"] == "bfloat16"
    assert tf_keras.mixed_precision.global_policy().name == "float32"
    # Also when training fails.
    monkeypatch.setattr(trainer, "fit", _Spy(fail=True))
    with pytest.raises(RuntimeError, match="training failed"):
        trainer.run_fn(_fn_args(transformed, tmp_path, _train(precision="mixed_bfloat16")))
    assert tf_keras.mixed_precision.global_policy().name == "float32"


def _nll_per_char(score, texts):
    out = score(examples=tf.constant([tf.train.Example(features=tf.train.Features(feature={
        features.TEXT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[t.encode()]))})).SerializeToString() for t in texts]))
    return float(tf.reduce_sum(out[features.NLL_OUTPUT]) /
                 tf.reduce_sum(out[features.NUM_CHARS_OUTPUT]))


def test_a_bf16_trained_export_scores_as_its_weights_do_in_float32(bf16_run, transformed):
    exported = tf.saved_model.load(str(bf16_run["root"] / "model"))
    bf16 = _nll_per_char(exported.signatures[features.SCORE_SIGNATURE], transformed["eval"])
    vocab = transformed["vocab"]
    float32 = model.build_model(len(vocab) + features.NUM_RESERVED_IDS, MODEL)
    float32.set_weights(bf16_run["seen"]["weights"])
    generator = export.Generator(float32, vocab, "stream")
    reference = _nll_per_char(generator.score, transformed["eval"])
    # bf16 keeps 8 bits of mantissa: its scores differ, but by rounding (measured: 1.05e-4
    # relative here), not by a mistake such as a weight or state mixed up (a model that
    # learned nothing scores about ln 31 = 3.43 here, 16% more).
    assert bf16 != reference
    assert bf16 == pytest.approx(reference, rel=1e-3)


def test_carried_state_trains_on_the_text_in_order_and_exports_without_it(
        bf16_run, transformed, tmp_path, monkeypatch):
    read = {}

    def reading(*args):
        read["text"], read["seq_length"] = READ(*args)
        return read["text"], read["seq_length"]

    monkeypatch.setattr(corpus_text, "read_in_corpus_order", reading)
    # In bf16: the carried state is float32, the layers' state inputs bf16.
    trainer.run_fn(_fn_args(transformed, tmp_path, _train(precision="mixed_bfloat16",
                                                          carry_state=True)))
    # The shuffled records, through Transform, back in the order of the text.
    assert read["text"].tolist() == transformed["train_ids"] and read["seq_length"] == SEQ_LENGTH
    # The export holds the network's variables and nothing of the carried state. (An
    # export of a model compiled for training also holds the optimizer's and the metrics'.)
    network = [(name, shape) for name, shape in _variable_shapes(bf16_run["root"] / "model")
               if not name.startswith(("model/optimizer/", "model/keras_api/"))]
    assert _variable_shapes(tmp_path / "model") == network


def test_weight_drop_trains_through_its_step_and_exports_the_plain_network(
        bf16_run, transformed, tmp_path, monkeypatch):
    rates = []

    def dropping(kernels, rate, *args):
        rates.append((len(kernels), rate))
        return DROPPED(kernels, rate, *args)

    monkeypatch.setattr(weight_drop, "gradients_with_dropped", dropping)
    args = _fn_args(transformed, tmp_path, _train(precision="mixed_bfloat16"))
    args.custom_config["model"]["weight_drop"] = 0.25
    trainer.run_fn(args)
    # The step was traced with each recurrent layer's matrix and the setting's rate...
    assert rates and set(rates) == {(MODEL.rnn_layers, 0.25)}
    # ...and the export holds the network's variables, nothing of the wrapper.
    network = [(name, shape) for name, shape in _variable_shapes(bf16_run["root"] / "model")
               if not name.startswith(("model/optimizer/", "model/keras_api/"))]
    assert _variable_shapes(tmp_path / "model") == network


def test_shifted_windows_train_on_the_text_read_in_order(transformed, tmp_path, monkeypatch):
    cut = {}

    def cutting(text, batch_size, seq_length, seed, repeat):
        cut.update(text=text, seq_length=seq_length, seed=seed)
        return SHIFTED(text, batch_size, seq_length, seed, repeat)

    monkeypatch.setattr(corpus_text, "shifted_windows", cutting)
    trainer.run_fn(_fn_args(transformed, tmp_path, _train(shift_windows=True, seed=5)))
    # The windows were cut from the text whole and in order, with the run's seed; the model
    # trained on them and was exported.
    assert cut["text"].tolist() == transformed["train_ids"]
    assert cut["seq_length"] == SEQ_LENGTH and cut["seed"] == 5
    assert tf.saved_model.load(str(tmp_path / "model")).signatures[features.SCORE_SIGNATURE]


def test_lines_are_read_whole_whatever_shift_windows_says(transformed, tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("lines mode cut the text into windows")

    monkeypatch.setattr(corpus_text, "read_in_corpus_order", refuse)
    args = _fn_args(transformed, tmp_path, _train(shift_windows=True))
    args.custom_config["mode"] = "lines"
    trainer.run_fn(args)
    assert (tmp_path / "model" / "saved_model.pb").exists()


READ = corpus_text.read_in_corpus_order
SHIFTED = corpus_text.shifted_windows
DROPPED = weight_drop.gradients_with_dropped


def _variable_shapes(saved_model):
    reader = tf.train.load_checkpoint(str(saved_model / "variables" / "variables"))
    return sorted((name, tuple(shape)) for name, shape in
                  reader.get_variable_to_shape_map().items())
