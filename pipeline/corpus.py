"""Finds and checks the input text before any Beam work starts.

A bad corpus (missing, empty, binary, not UTF-8, too short) fails here in a second
with one line naming the file, instead of minutes later inside a Beam worker.
"""
import dataclasses
import glob
import os
import re
import urllib.request
from typing import Dict, List, Optional, Tuple

from components import spans as spans_lib, text_records
from components.text_records import CorpusError

_WILDCARD = re.compile(r"[*?\[]|\{SPAN\}|\{VERSION\}")


@dataclasses.dataclass
class Corpus:
    input_base: str  # directory TFX's ExampleGen reads under
    pattern: str  # relative glob under input_base (may hold {SPAN})
    files: List[str]
    chars: int
    distinct_chars: int
    train_records: int
    eval_records: int
    spans: List[int] = dataclasses.field(default_factory=list)  # [] without {SPAN}


def cache_dir() -> str:
    return os.environ.get("TEXTGEN_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                        "textgen"))


def download(url: str) -> str:
    """Fetches a URL once into the cache; returns the local file."""
    path = os.path.join(cache_dir(), os.path.basename(url.split("?")[0]) or "corpus.txt")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.part-{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            out.write(response.read())
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CorpusError(f"cannot download {url} ({err}); pass --data with a local file") from None
    return path


def is_remote(data: str) -> bool:
    """gs://, s3://, hdfs://...: read by TensorFlow's filesystems on the workers."""
    return re.match(r"^[a-z][a-z0-9+.-]*://", data) is not None and not data.startswith("file://")


def locate(data: str):
    """data (file, directory, glob, {SPAN} pattern) → (input_base, relative pattern)."""
    if is_remote(data):
        if not _WILDCARD.search(data):
            raise CorpusError(f"--data {data}: a remote location needs a file pattern, e.g. "
                              f"{data.rstrip('/')}/span-{{SPAN}}/*.txt")
        scheme, rest = data.split("://", 1)
        base, pattern = _split_at_wildcard(rest, "/")
        return f"{scheme}://{base}", pattern
    data = os.path.abspath(os.path.expanduser(data.removeprefix("file://")))
    if _WILDCARD.search(data):
        base, pattern = _split_at_wildcard(data, os.sep)
        return base or os.sep, pattern
    if os.path.isdir(data):
        return data, "*"
    if os.path.isfile(data):
        return os.path.dirname(data), glob.escape(os.path.basename(data))
    raise CorpusError(f"--data {data}: no such file or directory")


def _split_at_wildcard(path: str, sep: str):
    parts = path.split(sep)
    first = next(i for i, p in enumerate(parts) if _WILDCARD.search(p))
    return sep.join(parts[:first]), sep.join(parts[first:])


def matching_spans(input_base: str, pattern: str, span_count: int = 1) -> Dict[int, List[str]]:
    """span → files for the latest `span_count` spans of a {SPAN} pattern, as ExampleGen
    will read them now."""
    full = os.path.join(input_base, pattern)
    found = spans_lib.group_by_span(
        (p for p in glob.glob(spans_lib.glob_of(full)) if os.path.isfile(p)), full)
    return spans_lib.select(found, max(found), span_count) if found else {}


def matching_files(input_base: str, pattern: str, span_count: int = 1) -> List[str]:
    """The files a pattern names now; for {SPAN} patterns, the latest spans'."""
    if spans_lib.has_span(pattern):
        return sorted(f for files in matching_spans(input_base, pattern, span_count).values()
                      for f in files)
    return sorted(p for p in glob.glob(os.path.join(input_base, pattern)) if os.path.isfile(p))


def check(data: str, mode: str, seq_length: int, eval_fraction: float,
          encoding_errors: str = "strict", span_count: int = 1) -> Corpus:
    """Locates and reads the corpus; raises CorpusError with a one-line reason."""
    if is_remote(data):
        raise CorpusError(f"--data {data}: `textgen run` reads local files; remote data is "
                          "read by a compiled pipeline (textgen compile) or the Airflow DAG")
    input_base, pattern = locate(data)
    if "{VERSION}" in pattern and not spans_lib.has_span(pattern):
        raise CorpusError(f"--data {data}: {{VERSION}} needs {{SPAN}} in the pattern too")
    selected = matching_spans(input_base, pattern, span_count) \
        if spans_lib.has_span(pattern) else {}
    files = matching_files(input_base, pattern, span_count)
    if not files:
        raise CorpusError(f"--data {data}: no files found")
    chars, distinct, train, held_out = 0, set(), 0, 0
    for path in files:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as err:
            raise CorpusError(f"{path}: cannot read it ({err.strerror})") from None
        text = text_records.decode(raw, path, encoding_errors)
        if mode == "lines":
            text_records.check_line_lengths(text, path)
        chars += len(text)
        distinct.update(text)
        tr, ev = text_records.split_text(text, mode, seq_length, eval_fraction)
        train, held_out = train + len(tr), held_out + len(ev)
    if chars == 0:
        raise CorpusError(f"--data {data}: the corpus is empty "
                          f"({len(files)} file(s), 0 characters)")
    if mode == "lines" and train + held_out == 0:
        raise CorpusError(f"--data {data}: no non-empty lines")
    if mode == "stream" and chars < seq_length + 1:
        raise CorpusError(
            f"--data {data}: corpus shorter than one training sequence: {chars} characters, "
            f"a sequence is seq_length+1 = {seq_length + 1}; add text or lower --seq-length")
    if train == 0 or held_out == 0:
        need = (f"a training sequence is seq_length+1 = {seq_length + 1} characters"
                if mode == "stream" else "each split needs at least one line")
        raise CorpusError(
            f"--data {data}: corpus too short: {chars} characters give {train} train and "
            f"{held_out} eval records ({need}, eval is the last {eval_fraction:.0%} of each "
            "file); add text, lower --seq-length or change --eval-fraction")
    return Corpus(input_base, pattern, files, chars, len(distinct), train, held_out,
                  sorted(selected))


def perplexity_bound(max_perplexity: Optional[float], corpus: Optional[Corpus]
                     ) -> Tuple[float, str]:
    """(bound, why): eval.max_perplexity, else uniform guessing over the corpus' characters."""
    if max_perplexity is not None:
        return max_perplexity, ""
    if corpus is None:
        raise CorpusError(
            "eval.max_perplexity is not set and the corpus cannot be read here to derive it: "
            "set eval.max_perplexity (--max-perplexity) for this pipeline")
    return float(corpus.distinct_chars), \
        " (uniform guessing over the corpus' characters; set --max-perplexity)"
