"""Raw text → training records, in plain Python (no TensorFlow, so the CLI can use it).

Two modes, as in the two tutorials:
  stream  the text is cut into windows of seq_length+1 characters (the model reads the
          first seq_length and predicts the last seq_length); newlines are kept.
  lines   one record per non-empty line, plus a "\\n" terminator so the model learns
          where a line ends.
The last `eval_fraction` of each file (by characters) is the eval split: contiguous,
as char-rnn and nanoGPT hold out, so validation numbers compare with theirs.
"""
from typing import Iterator, List, Tuple

from models.features import LINE_TERMINATOR

MODES = ("stream", "lines")
# Lines mode makes one record per line and the Trainer pads a batch to its longest record:
# a line past this is running text, not a name or a title.
MAX_LINE_CHARS = 10_000


class CorpusError(ValueError):
    """The input text cannot be used; the message names the file and what to do."""


def decode(raw: bytes, name: str, errors: str = "strict") -> str:
    """UTF-8 bytes → text with "\\r\\n" normalised to "\\n"; names the first bad byte."""
    nul = raw.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise CorpusError(
            f"{name}: looks like a binary file (NUL byte at offset {nul}), "
            "not text; point --data at UTF-8 text files")
    try:
        text = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{name}: not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset {err.start} "
            "cannot be decoded; convert the file to UTF-8, or pass --encoding-errors replace "
            "to read bad bytes as U+FFFD") from None
    if text.startswith("\ufeff"):  # a BOM is an encoding mark, not a character of the text
        text = text[1:]
    return text.replace("\r\n", "\n")


def stream_records(text: str, seq_length: int) -> Iterator[str]:
    """Consecutive windows of seq_length+1 characters; a shorter tail of >= 2 is kept."""
    size = seq_length + 1
    for start in range(0, len(text), size):
        window = text[start:start + size]
        if len(window) >= 2:
            yield window


def line_records(text: str) -> Iterator[str]:
    for line in text.split("\n"):
        if line.strip():
            yield line + LINE_TERMINATOR


def check_line_lengths(text: str, name: str) -> None:
    """Refuses a line too long to be one record of lines mode, naming the line."""
    for number, line in enumerate(text.split("\n"), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise CorpusError(
                f"{name}: line {number} is {len(line):,} characters long; lines mode makes one "
                f"record per line (at most {MAX_LINE_CHARS:,}): use --mode stream for running text")


def split_text(text: str, mode: str, seq_length: int,
               eval_fraction: float) -> Tuple[List[str], List[str]]:
    """(train records, eval records) of one file's text."""
    if mode == "stream":
        cut = int(round(len(text) * (1.0 - eval_fraction)))
        return list(stream_records(text[:cut], seq_length)), list(stream_records(text[cut:],
                                                                                 seq_length))
    if mode == "lines":
        cut = int(round(len(text) * (1.0 - eval_fraction)))
        # Cut at a line boundary so that no line is split between train and eval.
        boundary = text.rfind("\n", 0, cut) + 1 if cut < len(text) else len(text)
        return list(line_records(text[:boundary])), list(line_records(text[boundary:]))
    raise CorpusError(f"mode = {mode!r}: must be one of {', '.join(MODES)}")
