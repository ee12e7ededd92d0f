"""Bad input to the pipeline (issue 6): `textgen run` refuses it before any Beam work with
one line and exit code 2, creates no pipeline root and pushes nothing; odd but valid input
(CRLF, one huge line, thousands of distinct characters) is handled.

Unit-level checks of the same functions are in test_corpus.py, test_text_records.py and
test_configs.py; these go through the command line, or cover inputs those do not."""
import os

import pytest

from components import text_records
from components.text_records import CorpusError
from pipeline import cli, corpus
import textgen_cli

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(200))


def tree(path):
    """Every file and folder under path (relative), or None if path does not exist."""
    if not os.path.exists(path):
        return None
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, dirs, files in os.walk(path) for name in dirs + files)


@pytest.fixture
def run_textgen(tmp_path, capsys):
    """Runs `textgen run` with a fresh pipeline root and a serving dir holding version 1;
    returns (exit code, stderr) after checking that neither was touched."""
    root, serving = tmp_path / "root", tmp_path / "serving"
    (serving / "1").mkdir(parents=True)
    (serving / "1" / "saved_model.pb").write_bytes(b"a model pushed earlier")

    def run(*args):
        before = tree(serving)
        code = textgen_cli.main(["run", "--pipeline-root", str(root), "--serving-dir",
                                 str(serving), *args])
        assert tree(root) is None, "a pipeline root was created for bad input"
        assert tree(serving) == before, "the serving directory changed"
        return code, capsys.readouterr().err
    return run


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


# --- bad corpora -----------------------------------------------------------------------------

def _empty_files(p):
    write(p / "d" / "a.txt", "")
    write(p / "d" / "b.txt", "")
    return str(p / "d")


def _empty_directory(p):
    (p / "d").mkdir(parents=True)
    return str(p / "d")


def _only_subdirectories(p):
    (p / "d" / "sub" / "deeper").mkdir(parents=True)
    return str(p / "d")


def _directory_of_images(p):
    write(p / "d" / "picture.png", PNG)
    return str(p / "d")


def _latin1_among_utf8(p):
    write(p / "d" / "good.txt", TEXT)
    write(p / "d" / "latin1.txt", TEXT.encode() + "café".encode("latin-1"))
    return str(p / "d")


BAD_CORPORA = {
    "empty file": (lambda p: write(p / "e.txt", ""), ["e.txt", "the corpus is empty"]),
    "directory of empty files": (_empty_files, ["the corpus is empty", "2 file(s)"]),
    "empty directory": (_empty_directory, ["no files found"]),
    "directory with folders only": (_only_subdirectories, ["no files found"]),
    "directory with a PNG only": (_directory_of_images, ["picture.png", "binary"]),
    "a PNG": (lambda p: write(p / "x.png", PNG), ["x.png", "binary", "NUL byte at offset 8"]),
    "UTF-16 text": (lambda p: write(p / "u16.txt", TEXT.encode("utf-16")),
                    ["u16.txt", "binary", "UTF-8 text"]),
    "non-UTF-8 file among good ones": (
        _latin1_among_utf8,
        ["latin1.txt", "byte 0xe9 at byte offset", str(len(TEXT.encode()) + 3),
         "--encoding-errors replace"]),
    "shorter than one sequence": (lambda p: write(p / "s.txt", "x" * 100),
                                  ["100 characters", "seq_length+1 = 101"]),
    "a path that does not exist": (lambda p: str(p / "nowhere.txt"), ["no such file"]),
}


@pytest.mark.parametrize("case", BAD_CORPORA)
def test_bad_corpora_exit_2_with_one_line_and_create_nothing(tmp_path, run_textgen, case):
    make, words = BAD_CORPORA[case]
    code, err = run_textgen("--data", make(tmp_path / "data"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("textgen: error: "), err
    for word in words:
        assert word in err, (word, err)


def test_lines_mode_with_only_empty_lines_is_refused(tmp_path, run_textgen):
    code, err = run_textgen("--mode", "lines", "--data",
                            write(tmp_path / "blank.txt", "\n\r\n   \n\t\n" * 50))
    assert code == 2 and "no non-empty lines" in err and err.count("\n") == 1


def test_lines_mode_skips_empty_lines(tmp_path):
    text = "Aardonyx\n\n\nAbelisaurus\n   \n" * 20 + "Acrocanthosaurus\n\n"
    info = corpus.check(write(tmp_path / "names.txt", text), "lines", 100, 0.1)
    assert info.train_records + info.eval_records == 41  # the empty lines are no records
    train, held_out = text_records.split_text(text_records.decode(text.encode(), "x"), "lines",
                                              100, 0.1)
    assert all(record.strip() for record in train + held_out)


def test_encoding_errors_replace_goes_on(tmp_path):
    path = write(tmp_path / "latin1.txt", TEXT.encode() + "café\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="--encoding-errors replace"):
        corpus.check(path, "stream", 100, 0.1)
    info = corpus.check(path, "stream", 100, 0.1, encoding_errors="replace")
    assert info.chars == len(TEXT) + len("caf\ufffd\n")
    assert info.distinct_chars == len(set(TEXT + "caf\ufffd"))
    args = textgen_cli.build_parser().parse_args(["run", "--encoding-errors", "replace"])
    assert cli.config_from_args(args).data.encoding_errors == "replace"


# --- bad settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, setting", [
    (["--seq-length", "0"], "data.seq_length (--seq-length) = 0"),
    (["--batch-size", "-4"], "train.batch_size (--batch-size) = -4"),
    (["--epochs", "0"], "train.epochs (--epochs) = 0"),
    (["--steps-per-epoch", "0"], "train.steps_per_epoch (--steps-per-epoch) = 0"),
    (["--embedding-dim", "0"], "model.embedding_dim (--embedding-dim) = 0"),
    (["--rnn-units", "-1"], "model.rnn_units (--rnn-units) = -1"),
    (["--rnn-layers", "0"], "model.rnn_layers (--rnn-layers) = 0"),
    (["--eval-fraction", "0"], "data.eval_fraction (--eval-fraction) = 0.0"),
    (["--eval-fraction", "1"], "data.eval_fraction (--eval-fraction) = 1.0"),
    (["--eval-fraction", "-0.2"], "data.eval_fraction (--eval-fraction) = -0.2"),
    (["--eval-fraction", "nan"], "data.eval_fraction (--eval-fraction) = nan"),
    (["--eval-fraction", "inf"], "data.eval_fraction (--eval-fraction) = inf"),
])
def test_bad_settings_exit_2_with_one_line_naming_the_setting(tmp_path, run_textgen, flags,
                                                               setting):
    code, err = run_textgen("--data", write(tmp_path / "ok.txt", TEXT), *flags)
    assert code == 2 and err.count("\n") == 1, err
    assert setting in err, err


@pytest.mark.parametrize("name, content, words", [
    ("run.toml", '[data]\nmode = "words"\n', ["data.mode = 'words'", "'stream' or 'lines'"]),
    ("run.toml", "[train]\nepochs = \"ten\"\n", ["train.epochs (--epochs) = 'ten'"]),
    ("run.toml", "[data]\neval_fraction = 1.0\n", ["data.eval_fraction"]),
    ("run.toml", "[data\n", ["not valid TOML"]),
    ("run.yaml", "data: [unclosed\n", ["not valid YAML"]),
    ("run.yaml", "- a list\n", ["expected a mapping of sections"]),
    ("run.ini", "[data]\n", ["use a .toml, .yaml or .yml file"]),
    ("run.toml", b"[data]\nmode = \"\xff\"\n", ["not valid TOML"]),
    ("missing.toml", None, ["cannot read it (No such file or directory)"]),
    ("folder.toml", "directory", ["cannot read it (Is a directory)"]),
])
def test_bad_config_files_exit_2_with_one_line(tmp_path, run_textgen, name, content, words):
    path = tmp_path / "config" / name
    if content == "directory":
        path.mkdir(parents=True)
    elif content is not None:
        write(path, content)
    code, err = run_textgen("--data", write(tmp_path / "ok.txt", TEXT), "--config", str(path))
    assert code == 2 and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)


def test_unknown_mode_flag_is_refused_by_the_parser_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        textgen_cli.main(["run", "--data", write(tmp_path / "ok.txt", TEXT), "--mode", "words",
                          "--pipeline-root", str(tmp_path / "root")])
    assert caught.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --mode: invalid choice: 'words'" in last_line
    assert not (tmp_path / "root").exists()


# --- odd but valid input ---------------------------------------------------------------------

def test_crlf_is_normalised_to_newlines(tmp_path):
    crlf = TEXT.replace("\n", "\r\n")
    info = corpus.check(write(tmp_path / "dos.txt", crlf), "stream", 100, 0.1)
    assert info.chars == len(TEXT) and info.distinct_chars == len(set(TEXT))
    train, held_out = text_records.split_text(text_records.decode(crlf.encode(), "x"),
                                              "stream", 100, 0.1)
    assert not any("\r" in record for record in train + held_out)
    assert "".join(train) == TEXT[:len("".join(train))]


FIFTY_MB = 50 * 2**20


@pytest.fixture(scope="module")
def one_huge_line(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "one-line.txt"
    alphabet = b"abcdefghijklmnopqrstuvwxyz "
    with open(path, "wb") as f:
        f.write((alphabet * (FIFTY_MB // len(alphabet) + 1))[:FIFTY_MB])
    return str(path)


def test_one_50_mb_line_is_cut_into_sequences_in_stream_mode(one_huge_line):
    info = corpus.check(one_huge_line, "stream", 100, 0.1)
    assert info.chars == FIFTY_MB
    eval_chars = FIFTY_MB - round(FIFTY_MB * 0.9)
    assert info.train_records == -(-(FIFTY_MB - eval_chars) // 101)
    assert info.eval_records == -(-eval_chars // 101)


def test_one_50_mb_line_is_refused_in_lines_mode(tmp_path, one_huge_line):
    # Enough short lines after it that the eval split (the last 10%) holds only short
    # ones: the checks of split sizes pass, and only the line's length is wrong.
    path = str(tmp_path / "names.txt")
    with open(one_huge_line, "rb") as f, open(path, "wb") as out:
        out.write(f.read() + b"\n" + b"a short name\n" * (FIFTY_MB // 12 // 8))
    with pytest.raises(CorpusError) as caught:
        corpus.check(path, "lines", 100, 0.1)
    assert "names.txt" in str(caught.value) and "line 1" in str(caught.value)
    assert "\n" not in str(caught.value)


# --- thousands of distinct characters --------------------------------------------------------

CJK = [chr(code) for code in range(0x4E00, 0x4E00 + 3000)]  # 3,000 CJK ideographs


@pytest.fixture(scope="module")
def cjk_vocab(tmp_path_factory):
    """The vocabulary tf.Transform builds (as the pipeline's Transform does) over a corpus
    of 3,000 distinct ideographs and newlines."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from models import features, preprocessing
    records = ["".join(CJK[i:i + 100]) + "\n" for i in range(0, len(CJK), 100)]
    tmp = tmp_path_factory.mktemp("cjk")
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
        {features.TEXT_KEY: tf.io.FixedLenFeature([1], tf.string)}))
    data = [{features.TEXT_KEY: [record.encode()]} for record in records]
    with tft_beam.Context(temp_dir=str(tmp / "tmp")):
        (_, _), transform_fn = ((data, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing.preprocessing_fn, output_record_batches=False))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "out"))
    output = tft.TFTransformOutput(str(tmp / "out"))
    return [token.decode() for token in output.vocabulary_by_name(features.VOCAB_NAME)]


def test_thousands_of_distinct_characters_all_enter_the_vocabulary(cjk_vocab, tmp_path):
    assert sorted(cjk_vocab) == sorted(CJK + ["\n"])
    info = corpus.check(write(tmp_path / "cjk.txt", "".join(CJK) * 3), "stream", 100, 0.1)
    assert info.distinct_chars == len(CJK)


def test_a_model_over_a_cjk_vocabulary_generates_only_its_characters(cjk_vocab):
    import tensorflow as tf

    from conftest import build_tiny_model
    from models import export
    generator = export.Generator(build_tiny_model(cjk_vocab), cjk_vocab, "stream")
    prompts = tf.constant(["一丁", "丂", "unseen 😀 characters"])
    out = generator.generate(prompts=prompts, num_chars=tf.constant([40]),
                             temperature=tf.constant([1.0, 1.0, 0.0]), top_k=tf.constant([0]),
                             top_p=tf.constant([1.0]), seed=tf.constant([3, 4, 5]))
    completions = [text.decode() for text in out["completion"].numpy()]
    assert [len(text) for text in completions] == [40, 40, 40]
    assert set("".join(completions)) <= set(cjk_vocab)  # never [UNK], never a byte fragment
    step = generator.one_step(chars=tf.constant(["丁"]),
                              states=tf.zeros([1, generator.state_size]),
                              temperature=tf.constant([1.0]), seed=tf.constant([5]))
    assert step["next_chars"].numpy()[0].decode() in cjk_vocab
