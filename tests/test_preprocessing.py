"""tf.Transform: the character vocabulary (with "\\n"), [UNK], and parity with the export."""
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import export, features, preprocessing
from conftest import build_tiny_model

CORPUS = ["First Citizen:\nBefore we proceed", "any further, hear me speak.\n", "Café!\n"]


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tft")
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
        {features.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}))
    data = [{features.TEXT_KEY: [t.encode()]} for t in CORPUS]
    with tft_beam.Context(temp_dir=str(tmp / "tmp")):
        (_, _), transform_fn = ((data, metadata)
                                | tft_beam.AnalyzeAndTransformDataset(
                                    preprocessing.preprocessing_fn, output_record_batches=False))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "out"))
    return tft.TFTransformOutput(str(tmp / "out"))


def test_vocabulary_has_every_character_newline_included(transform_output):
    vocab = [t.decode() for t in transform_output.vocabulary_by_name(features.VOCAB_NAME)]
    assert set(vocab) == set("".join(CORPUS))
    assert "\n" in vocab and "é" in vocab and " " in vocab
    assert len(vocab) == len(set(vocab))


def transform(transform_output, texts):
    raw = {features.TEXT_KEY: tf.constant([[t.encode()] for t in texts])}
    ids = transform_output.transform_raw_features(raw)[features.IDS_KEY]
    return tf.sparse.to_dense(ids, default_value=-99).numpy()


def test_unknown_characters_map_to_unk(transform_output):
    ids = transform(transform_output, ["F€\n"])[0]
    vocab = [t.decode() for t in transform_output.vocabulary_by_name(features.VOCAB_NAME)]
    assert ids[1] == features.UNK_ID
    assert ids[0] == vocab.index("F") + features.NUM_RESERVED_IDS
    assert ids[2] == vocab.index("\n") + features.NUM_RESERVED_IDS
    assert features.PAD_ID not in ids


def test_exported_lookup_matches_the_transform_graph(transform_output):
    """The vocabulary baked into the SavedModel maps text exactly as Transform does."""
    vocab = [t.decode() for t in transform_output.vocabulary_by_name(features.VOCAB_NAME)]
    generator = export.Generator(build_tiny_model(vocab), vocab, "stream")
    texts = CORPUS + ["zZ€ \n\nq", "é"]
    expected = transform(transform_output, texts)
    encoded = generator.encode(tf.constant(texts)).to_tensor(default_value=-99).numpy()
    assert (encoded == expected).all()
