"""{SPAN} patterns: grouping files by span, the last-N range, and the CLI's pre-flight."""
import os

import pytest

from components import spans
from components.text_records import CorpusError
from pipeline import corpus


def test_group_by_span_takes_numbers_not_names():
    paths = ["/d/span-2/a.txt", "/d/span-10/a.txt", "/d/span-10/b.txt", "/d/span-x/a.txt",
             "/d/other-3/a.txt"]
    assert spans.group_by_span(paths, "/d/span-{SPAN}/*.txt") == {
        2: ["/d/span-2/a.txt"], 10: ["/d/span-10/a.txt", "/d/span-10/b.txt"]}


def test_the_latest_version_of_each_span():
    paths = ["/d/1/v1/a.txt", "/d/1/v2/a.txt", "/d/2/v1/a.txt"]
    assert spans.group_by_span(paths, "/d/{SPAN}/v{VERSION}/*.txt") == {
        1: ["/d/1/v2/a.txt"], 2: ["/d/2/v1/a.txt"]}


def test_select_the_last_n_spans_skipping_gaps():
    by_span = {1: ["a"], 2: ["b"], 4: ["d"], 5: ["e"]}
    assert spans.select(by_span, 5, 1) == {5: ["e"]}
    assert spans.select(by_span, 5, 3) == {4: ["d"], 5: ["e"]}
    assert spans.select(by_span, 4, 10) == {1: ["a"], 2: ["b"], 4: ["d"]}
    assert spans.describe([3, 4, 5]) == "3-5" and spans.describe([2, 5]) == "2,5"


def _spans_on_disk(tmp_path, texts):
    for span, text in texts.items():
        os.makedirs(tmp_path / f"span-{span}", exist_ok=True)
        (tmp_path / f"span-{span}" / "part.txt").write_text(text)
    return str(tmp_path / "span-{SPAN}" / "*.txt")


def test_preflight_reads_the_latest_span_or_the_last_n(tmp_path):
    pattern = _spans_on_disk(tmp_path, {1: "a" * 500, 2: "b" * 600, 3: "c" * 700})
    latest = corpus.check(pattern, "stream", 40, 0.1)
    assert latest.spans == [3] and latest.chars == 700
    assert latest.input_base == str(tmp_path) and latest.pattern == "span-{SPAN}/*.txt"
    two = corpus.check(pattern, "stream", 40, 0.1, span_count=2)
    assert two.spans == [2, 3] and two.chars == 1300 and two.distinct_chars == 2


def test_preflight_names_a_bad_file_in_an_older_span_of_the_range(tmp_path):
    pattern = _spans_on_disk(tmp_path, {1: "a" * 500, 2: "b" * 600})
    (tmp_path / "span-1" / "part.txt").write_bytes(b"ok\xff" * 200)
    assert corpus.check(pattern, "stream", 40, 0.1).spans == [2]
    with pytest.raises(CorpusError, match=r"span-1/part\.txt: not UTF-8"):
        corpus.check(pattern, "stream", 40, 0.1, span_count=2)


def test_remote_locations_split_at_the_first_wildcard():
    assert corpus.locate("gs://b/text/span-{SPAN}/*.txt") == ("gs://b/text", "span-{SPAN}/*.txt")
    with pytest.raises(CorpusError, match="needs a file pattern"):
        corpus.locate("gs://b/text/")
    with pytest.raises(CorpusError, match="reads local files"):
        corpus.check("gs://b/text/*.txt", "stream", 40, 0.1)
