"""Finding and checking the corpus before any Beam work."""
import os

import pytest

from pipeline import corpus
from components.text_records import CorpusError


def write(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def test_a_file_a_directory_and_a_glob(tmp_path):
    write(tmp_path / "a.txt", "x" * 300)
    write(tmp_path / "b.txt", "y" * 300)
    assert corpus.locate(str(tmp_path / "a.txt")) == (str(tmp_path), "a.txt")
    assert corpus.locate(str(tmp_path)) == (str(tmp_path), "*")
    assert corpus.locate(str(tmp_path / "*.txt")) == (str(tmp_path), "*.txt")
    info = corpus.check(str(tmp_path / "*.txt"), "stream", seq_length=9, eval_fraction=0.1)
    assert len(info.files) == 2 and info.chars == 600 and info.distinct_chars == 2
    assert info.train_records == 2 * 27 and info.eval_records == 2 * 3


def test_span_pattern_takes_the_latest_span(tmp_path):
    for span in (1, 2, 10):
        os.makedirs(tmp_path / f"span-{span}")
        write(tmp_path / f"span-{span}" / "t.txt", "z" * 100)
    base, pattern = corpus.locate(str(tmp_path / "span-{SPAN}" / "*.txt"))
    assert (base, pattern) == (str(tmp_path), "span-{SPAN}/*.txt")
    assert corpus.matching_files(base, pattern) == [str(tmp_path / "span-10" / "t.txt")]


@pytest.mark.parametrize("setup, message", [
    (lambda p: str(p / "missing.txt"), "no such file"),
    (lambda p: write(p / "empty.txt", ""), "empty"),
    (lambda p: write(p / "bad.txt", b"hello \xc3\x28 world"),
     r"bad\.txt: not UTF-8 text: byte 0xc3 at byte offset 6"),
    (lambda p: write(p / "short.txt", "only a few characters"),
     "shorter than one training sequence"),
    (lambda p: write(p / "pic.png", b"\x89PNG\r\n\x1a\n\x00\x00"), "binary"),
    (lambda p: str(p / "nothing" / "*.txt"), "no files found"),
])
def test_bad_corpora_fail_with_one_clear_line(tmp_path, setup, message):
    with pytest.raises(CorpusError, match=message) as err:
        corpus.check(setup(tmp_path), "stream", seq_length=100, eval_fraction=0.1)
    assert "\n" not in str(err.value)


def test_lines_mode_with_only_empty_lines(tmp_path):
    with pytest.raises(CorpusError, match="no non-empty lines"):
        corpus.check(write(tmp_path / "blank.txt", "\n\n  \n"), "lines", 100, 0.1)


def test_download_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_CACHE", str(tmp_path))
    write(tmp_path / "shakespeare.txt", "cached")
    assert corpus.download("https://example.invalid/data/shakespeare.txt") == str(
        tmp_path / "shakespeare.txt")


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_CACHE", str(tmp_path))
    with pytest.raises(CorpusError, match="pass --data with a local file"):
        corpus.download("http://127.0.0.1:9/nothing.txt")
    assert os.listdir(tmp_path) == []


def test_eval_split_must_not_be_empty(tmp_path):
    with pytest.raises(CorpusError, match="corpus too short: .* 0 eval records"):
        corpus.check(write(tmp_path / "t.txt", "abcdefghijk"), "stream", seq_length=10,
                     eval_fraction=0.01)
