"""The ExampleGen executor over several files: per-file eval tails, counts on the artifact."""
import os

import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from components import text_example_gen
from models import features


def read_split(uri):
    records = []
    for name in sorted(os.listdir(uri)):
        for raw in tf.data.TFRecordDataset(os.path.join(uri, name), compression_type="GZIP"):
            example = tf.train.Example.FromString(raw.numpy())
            records.append(example.features.feature[features.TEXT_KEY].bytes_list.value[0]
                           .decode())
    return records


def run_executor(tmp_path, pattern, mode, seq_length=9, eval_fraction=0.2, span_count=1,
                 span=None):
    component = text_example_gen.text_example_gen(
        input_base=str(tmp_path / "data"), pattern=pattern, mode=mode, seq_length=seq_length,
        eval_fraction=eval_fraction, encoding_errors="strict", code_fingerprint="test",
        span_count=span_count)
    exec_properties = dict(component.exec_properties)
    # The orchestrator hands protos to executors as JSON strings.
    for key in (specs.INPUT_CONFIG_KEY, specs.OUTPUT_CONFIG_KEY, specs.CUSTOM_CONFIG_KEY):
        if not isinstance(exec_properties[key], str):
            exec_properties[key] = proto_utils.proto_to_json(exec_properties[key])
    if span is not None:
        # What TFX's driver does before the executor: pick the span, fill in the pattern.
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[specs.INPUT_CONFIG_KEY], input_config)
        input_config.splits[0].pattern = input_config.splits[0].pattern.replace(
            "{SPAN}", str(span))
        exec_properties[specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
        exec_properties["span"] = span
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out")
    executor = text_example_gen.TextExampleGenExecutor(
        text_example_gen.TextExampleGenExecutor.Context(
            beam_pipeline_args=["--runner=DirectRunner"], tmp_dir=str(tmp_path / "tmp")))
    executor.Do({}, {specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def test_stream_mode_over_two_files(tmp_path):
    os.makedirs(tmp_path / "data")
    a = "A" * 45 + "a\n" * 25 + "tail-of-a\n"  # 105 characters
    b = "B" * 90 + "b" * 10  # 100 characters
    (tmp_path / "data" / "a.txt").write_text(a)
    (tmp_path / "data" / "b.txt").write_text(b)
    examples = run_executor(tmp_path, "*.txt", "stream")
    train = read_split(os.path.join(examples.uri, "Split-train"))
    held_out = read_split(os.path.join(examples.uri, "Split-eval"))
    # Each file's last 20% is eval: a[84:], b[80:]; records are 10 characters, newlines kept.
    assert sorted(held_out) == sorted([a[84:94], a[94:104], b[80:90], b[90:100]])
    assert sorted(train) == sorted([a[i:min(i + 10, 84)] for i in range(0, 84, 10)]
                                   + [b[i:i + 10] for i in range(0, 80, 10)])
    assert any("\n" in r for r in train)
    assert examples.get_int_custom_property("train_records") == len(train)
    assert examples.get_int_custom_property("eval_chars") == 40
    assert examples.get_int_custom_property("train_chars") == 84 + 80


def test_each_record_carries_where_it_was_cut(tmp_path):
    # Beam writes the records shuffled: their positions put each file's text back together.
    os.makedirs(tmp_path / "data")
    texts = ["".join(chr(ord("a") + i % 26) for i in range(n)) for n in (60, 31)]
    for name, text in zip(("a.txt", "b.txt"), texts):
        (tmp_path / "data" / name).write_text(text)
    examples = run_executor(tmp_path, "*.txt", "stream", span=7)
    for split, part in (("train", lambda t: t[:round(len(t) * 0.8)]),
                        ("eval", lambda t: t[round(len(t) * 0.8):])):
        cut = {}
        for name in os.listdir(os.path.join(examples.uri, f"Split-{split}")):
            for raw in tf.data.TFRecordDataset(os.path.join(examples.uri, f"Split-{split}", name),
                                               compression_type="GZIP"):
                f = tf.train.Example.FromString(raw.numpy()).features.feature
                span, index, record = f[features.POSITION_KEY].int64_list.value
                cut[span, index, record] = f[features.TEXT_KEY].bytes_list.value[0].decode()
        assert {span for span, _, _ in cut} == {7}
        for index, text in enumerate(texts):
            records = sorted(k for k in cut if k[1] == index)
            assert [k[2] for k in records] == list(range(len(records)))
            assert "".join(cut[k] for k in records) == part(text)


def test_lines_mode_records_end_with_the_terminator(tmp_path):
    os.makedirs(tmp_path / "data")
    names = [f"Saurus{i}" for i in range(20)]
    (tmp_path / "data" / "names.txt").write_text("\n".join(names) + "\n\n")
    examples = run_executor(tmp_path, "names.txt", "lines")
    train = read_split(os.path.join(examples.uri, "Split-train"))
    held_out = read_split(os.path.join(examples.uri, "Split-eval"))
    assert sorted(train + held_out) == sorted(n + "\n" for n in names)
    assert set(held_out) == {n + "\n" for n in names[16:]}


def _write_spans(tmp_path, texts):
    for span, text in texts.items():
        os.makedirs(tmp_path / "data" / f"span-{span}", exist_ok=True)
        (tmp_path / "data" / f"span-{span}" / "part.txt").write_text(text)


def test_the_latest_span_alone_by_default(tmp_path):
    _write_spans(tmp_path, {1: "one\n" * 10, 2: "two\n" * 10, 3: "three\n" * 10})
    examples = run_executor(tmp_path, "span-{SPAN}/*.txt", "lines", span=3)
    records = read_split(os.path.join(examples.uri, "Split-train")) + \
        read_split(os.path.join(examples.uri, "Split-eval"))
    assert set(records) == {"three\n"}
    assert examples.get_string_custom_property("spans") == "3"


def test_a_range_of_the_last_spans(tmp_path):
    _write_spans(tmp_path, {1: "one\n" * 10, 2: "two\n" * 10, 3: "three\n" * 10})
    examples = run_executor(tmp_path, "span-{SPAN}/*.txt", "lines", span=3, span_count=2)
    train = read_split(os.path.join(examples.uri, "Split-train"))
    held_out = read_split(os.path.join(examples.uri, "Split-eval"))
    assert set(train) == {"two\n", "three\n"}
    # Each span's file keeps its own eval tail.
    assert set(held_out) == {"two\n", "three\n"}
    assert examples.get_string_custom_property("spans") == "2-3"
