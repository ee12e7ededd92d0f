"""Spans in input patterns (TFX's `{SPAN}` and `{VERSION}`), in plain Python.

TFX's ExampleGen driver picks the latest span and fingerprints its files; reading the
last N spans is ours: the driver only knows single spans. The CLI's pre-flight check
(local files) and the executor (any filesystem TensorFlow reads) share this code.
"""
import re
from typing import Dict, Iterable, List

SPAN, VERSION = "{SPAN}", "{VERSION}"


def has_span(pattern: str) -> bool:
    return SPAN in pattern


def glob_of(pattern: str) -> str:
    """The glob matching every span's (and version's) files."""
    return pattern.replace(SPAN, "*").replace(VERSION, "*")


def _regex(pattern: str) -> "re.Pattern[str]":
    parts = []
    for piece in re.split(r"(\{SPAN\}|\{VERSION\}|\*|\?)", pattern):
        if piece == SPAN:
            parts.append(r"(?P<span>\d+)")
        elif piece == VERSION:
            parts.append(r"(?P<version>\d+)")
        elif piece == "*":
            parts.append(r"[^/]*")
        elif piece == "?":
            parts.append(r"[^/]")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def group_by_span(paths: Iterable[str], pattern: str) -> Dict[int, List[str]]:
    """span → its files (of the latest version when the pattern has {VERSION}).

    `paths` are what a glob of glob_of(pattern) found; `pattern` is the full pattern
    with {SPAN} in it, on the same filesystem prefix as the paths.
    """
    regex = _regex(pattern)
    found: Dict[int, Dict[int, List[str]]] = {}
    for path in paths:
        match = regex.fullmatch(path)
        if match:
            version = int(match.group("version")) if "version" in regex.groupindex else 0
            found.setdefault(int(match.group("span")), {}).setdefault(version, []).append(path)
    return {span: sorted(versions[max(versions)]) for span, versions in found.items()}


def select(by_span: Dict[int, List[str]], latest: int, count: int) -> Dict[int, List[str]]:
    """The spans latest-count+1 .. latest that exist (gaps are skipped)."""
    return {span: files for span, files in sorted(by_span.items())
            if latest - count < span <= latest}


def describe(spans: Iterable[int]) -> str:
    """[3, 4, 5] → "3-5"; [2, 5] → "2,5"; [7] → "7"."""
    spans = sorted(spans)
    if len(spans) > 1 and spans == list(range(spans[0], spans[-1] + 1)):
        return f"{spans[0]}-{spans[-1]}"
    return ",".join(str(s) for s in spans)
