"""The sampling defaults and rules of models/settings.py, and the places that use them:
`textgen generate`, the server's pre-checks and the client library (the graph's own checks
are in test_export.py)."""
import inspect

import numpy as np
import pytest

import textgen_cli
from models.settings import DEFAULT_SAMPLING, SAMPLING_RULES, broken_sampling_rule
from serving import client, signatures
from serving.errors import ServingError
from serving.settings import DEFAULT_LIMITS


@pytest.mark.parametrize("name, good, bad", [
    ("num_chars", [0, 1, 10**6], [-1]),
    ("temperature", [0.0, 0.8, 1e6], [-1e-9, float("nan"), float("inf")]),
    ("top_k", [0, 40], [-1]),
    ("top_p", [1e-9, 0.5, 1.0], [0.0, -0.1, 1.0000001, float("nan")]),
    ("seed", [0, -2**31, 2**31 - 1, np.int32(7)], [2**31, -2**31 - 1, 10**30]),
])
def test_each_rule_keeps_its_bounds(name, good, bad):
    rule = SAMPLING_RULES[name]
    assert [rule.holds(v) for v in good] == [True] * len(good)
    assert [rule.holds(v) for v in bad] == [False] * len(bad)


def test_the_defaults_keep_the_rules_and_the_first_broken_rule_is_named():
    defaults = {name: getattr(DEFAULT_SAMPLING, name) for name in SAMPLING_RULES}
    assert broken_sampling_rule(**defaults) is None
    assert broken_sampling_rule(**{**defaults, "top_k": -1, "top_p": 2.0}) == (
        "top_k", -1, SAMPLING_RULES["top_k"])


def test_the_client_library_samples_as_textgen_generate_does():
    generate = inspect.signature(client.Client.generate).parameters
    stream = inspect.signature(client.Client.stream).parameters
    for name in ("temperature", "top_k", "top_p", "seed"):
        assert generate[name].default == getattr(DEFAULT_SAMPLING, name), name
    for name in ("temperature", "seed"):
        assert stream[name].default == getattr(DEFAULT_SAMPLING, name), name
    args = textgen_cli.build_parser().parse_args(["generate"])
    assert (args.prompt, args.num_chars, args.temperature, args.top_k, args.top_p,
            args.seed) == (DEFAULT_SAMPLING.prompt, DEFAULT_SAMPLING.num_chars,
                           DEFAULT_SAMPLING.temperature, DEFAULT_SAMPLING.top_k,
                           DEFAULT_SAMPLING.top_p, DEFAULT_SAMPLING.seed)


@pytest.mark.parametrize("name, value, dtype", [
    ("temperature", "-0.5", np.float32), ("top_k", "-2", np.int32), ("top_p", "1.5", np.float32),
    ("num_chars", "-1", np.int32)])
def test_the_command_line_and_the_server_word_a_rule_alike(capsys, name, value, dtype):
    text = SAMPLING_RULES[name].text
    assert textgen_cli.main(["generate", f"--{name.replace('_', '-')}", value]) == 2
    assert f"{text}\n" in capsys.readouterr().err
    check = signatures._VALUE_CHECKS[name][1]
    with pytest.raises(ServingError) as caught:
        check(name, np.array([1, float(value)], dtype), DEFAULT_LIMITS)
    assert caught.value.message == f"{name} is {dtype(float(value))} in row 1: it must be {text}"
