"""Cutting raw text into records: both modes, split ratio, decoding errors."""
import pytest

from components import text_records
from components.text_records import CorpusError


def test_stream_windows_are_seq_length_plus_one_and_keep_newlines():
    text = "ab\ncd\nefgh\nij"  # 13 characters
    records = list(text_records.stream_records(text, seq_length=4))
    assert records == ["ab\ncd", "\nefgh", "\nij"]
    assert "".join(records) == text


def test_stream_drops_a_one_character_tail():
    # A single character has no next character to predict.
    assert list(text_records.stream_records("abcdef", seq_length=4)) == ["abcde"]


def test_lines_mode_one_record_per_nonempty_line_with_terminator():
    text = "Aardonyx\n\n  \nAbelisaurus\r\nAcrocanthosaurus"
    records = list(text_records.line_records(text_records.decode(text.encode(), "x")))
    assert records == ["Aardonyx\n", "Abelisaurus\n", "Acrocanthosaurus\n"]


def test_eval_is_the_contiguous_tail_of_the_file():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, held_out = text_records.split_text(text, "stream", seq_length=9, eval_fraction=0.1)
    assert "".join(train) == text[:900]
    assert "".join(held_out) == text[900:]
    assert all(len(r) == 10 for r in train + held_out)


def test_split_ratio_is_configurable():
    text = "x" * 1000
    train, held_out = text_records.split_text(text, "stream", seq_length=9, eval_fraction=0.25)
    assert len("".join(held_out)) == 250 and len("".join(train)) == 750


def test_lines_split_never_cuts_a_line():
    lines = [f"name{i:03d}" for i in range(100)]
    text = "\n".join(lines) + "\n"
    train, held_out = text_records.split_text(text, "lines", seq_length=100, eval_fraction=0.1)
    assert [r.rstrip("\n") for r in train + held_out] == lines
    assert 8 <= len(held_out) <= 12
    assert train[-1] == "name%03d\n" % (len(train) - 1)


def test_decode_names_file_and_byte_offset_of_bad_utf8():
    with pytest.raises(CorpusError,
                       match=r"corpus\.txt: not UTF-8 text: byte 0xff at byte offset 3"):
        text_records.decode(b"abc\xffdef", "corpus.txt")


def test_decode_replace_keeps_going():
    assert text_records.decode(b"ab\xffc", "x", errors="replace") == "ab\ufffdc"


def test_decode_refuses_binary_files():
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    with pytest.raises(CorpusError, match="binary"):
        text_records.decode(png, "image.png")


def test_decode_normalises_crlf_and_drops_bom():
    assert text_records.decode("\ufeffa\r\nb\rc".encode(), "x") == "a\nb\rc"


def test_unknown_mode_is_refused():
    with pytest.raises(CorpusError, match="mode"):
        text_records.split_text("abc", "words", 10, 0.1)
