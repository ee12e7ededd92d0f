"""ExampleGen over raw text: files → tf.Examples with one bytes feature `text`.

Built on TFX's FileBasedExampleGen, so its driver gives us input fingerprints (cache
invalidation when a file changes), {SPAN} patterns and range configs; only the
executor is ours: it reads whole files and cuts them as components/text_records.py says.
"""
import hashlib
import json
import logging
from typing import Any, Dict

import apache_beam as beam
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import names, spans, text_records
from models import features

logger = logging.getLogger(__name__)

TRAIN, EVAL = names.TRAIN, names.EVAL


def _settings(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], config)
    struct = struct_pb2.Struct()
    config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


# The records' layout, part of the cut's fingerprint: spans written before records carried
# their position are not trained on with newer ones (Transform's schema, inferred from the
# newest span, requires the feature).
RECORD_FORMAT = 2


def _to_example(record: str, position) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        features.TEXT_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[record.encode("utf-8")])),
        # TFX writes the records shuffled; training with carried state orders them by this.
        features.POSITION_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=position)),
    })).SerializeToString()


def _read_file(path: str, encoding_errors: str, mode: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        text = text_records.decode(f.read(), path, encoding_errors)
    if mode == "lines":
        # Again here: runs started by Airflow or Vertex skip the CLI's pre-flight check.
        text_records.check_line_lengths(text, path)
    return text


def _full_pattern(exec_properties: Dict[str, Any], pattern: str) -> str:
    return f"{exec_properties[standard_component_specs.INPUT_BASE_KEY].rstrip('/')}/{pattern}"


def _matching_files(exec_properties: Dict[str, Any], pattern: str):
    full_pattern = _full_pattern(exec_properties, pattern)
    files = sorted(p for p in tf.io.gfile.glob(full_pattern) if not tf.io.gfile.isdir(p))
    if not files:
        raise text_records.CorpusError(f"no files match {full_pattern}")
    return files


def _selected_spans(exec_properties: Dict[str, Any], resolved_pattern: str):
    """span → files: the driver's span (the latest) and the span_count - 1 before it.

    The driver has already put its span number into the input pattern; the range is
    found from the original {SPAN} pattern kept in the custom config.
    """
    s = _settings(exec_properties)
    span_pattern, count = s.get("span_pattern", ""), int(s.get("span_count", 1))
    latest = int(exec_properties.get("span") or 0)
    if count == 1 or not spans.has_span(span_pattern):
        return {latest: _matching_files(exec_properties, resolved_pattern)}
    full = _full_pattern(exec_properties, span_pattern)
    found = spans.group_by_span(
        (p for p in tf.io.gfile.glob(spans.glob_of(full)) if not tf.io.gfile.isdir(p)), full)
    selected = spans.select(found, latest, count)
    if latest not in selected:
        raise text_records.CorpusError(f"span {latest} has no files matching {full}")
    return selected


@beam.ptransform_fn
def _TextToTaggedRecords(pipeline, exec_properties: Dict[str, Any], pattern: str):
    """(split, tf.Example) for every record of the selected spans' files: each file is cut
    whole, its tail going to the eval split."""
    s = _settings(exec_properties)

    def cut(source):
        span, index, path = source
        train, held_out = text_records.split_text(
            _read_file(path, s["encoding_errors"], s["mode"]), s["mode"], int(s["seq_length"]),
            float(s["eval_fraction"]))
        return [(name, r, (span, index, i)) for name, records in ((TRAIN, train),
                                                                   (EVAL, held_out))
                for i, r in enumerate(records)]

    return (pipeline
            | "Files" >> beam.Create([(span, index, f) for span, files in _selected_spans(
                exec_properties, pattern).items() for index, f in enumerate(files)])
            | "Cut" >> beam.FlatMap(cut)
            | "ToExample" >> beam.MapTuple(
                lambda split, record, position: (split, _to_example(record, position))))


class TextExampleGenExecutor(BaseExampleGenExecutor):
    """Cuts text into records; the tail of each file is the eval split."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _TextToTaggedRecords

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        # Not TFX's hash split: a file's tail is held out whole, as char-rnn and nanoGPT do.
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                  input_config)
        tagged = pipeline | "TextToRecords" >> self.GetInputSourceToExamplePTransform()(
            exec_properties, input_config.splits[0].pattern)
        return {
            name: (tagged
                   | f"Select[{name}]" >> beam.Filter(lambda kv, n=name: kv[0] == n)
                   | f"Drop[{name}]" >> beam.Values())
            for name in (TRAIN, EVAL)
        }

    def Do(self, input_dict, output_dict, exec_properties):
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        examples.set_string_custom_property(names.CUT_FINGERPRINT,
                                            cut_fingerprint(exec_properties))
        if spans.has_span(_settings(exec_properties).get("span_pattern", "")):
            # Examples.span holds the latest span only; this names every span read.
            input_config = example_gen_pb2.Input()
            proto_utils.json_to_proto(
                exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
            examples.set_string_custom_property(names.SPANS, spans.describe(
                _selected_spans(exec_properties, input_config.splits[0].pattern)))
        counts = {}
        for split in artifact_utils.decode_split_names(examples.split_names):
            uri = artifact_utils.get_split_uri([examples], split)
            records, chars = _count(tf.io.gfile.glob(f"{uri}/*"))
            counts[split] = {"records": records, "chars": chars}
            examples.set_int_custom_property(names.records_property(split), records)
            examples.set_int_custom_property(names.chars_property(split), chars)
            if records == 0:
                raise text_records.CorpusError(
                    f"the {split} split is empty: the corpus is too short for "
                    f"eval_fraction={_settings(exec_properties).get('eval_fraction')}; "
                    "add text or change the eval fraction")
        logger.info("text ExampleGen: %s", json.dumps(counts))


def cut_fingerprint(exec_properties: Dict[str, Any]) -> str:
    """sha256 (16 hex digits) of where the text comes from and the settings that cut it
    into records: equal for two spans whose examples may be trained on together."""
    s = _settings(exec_properties)
    return hashlib.sha256(json.dumps(
        [_full_pattern(exec_properties, s["span_pattern"]), s["mode"], s["seq_length"],
         s["eval_fraction"], s["encoding_errors"], RECORD_FORMAT]).encode()).hexdigest()[:16]


def _count(files):
    records = chars = 0
    if not files:
        return 0, 0
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
    spec = {features.TEXT_KEY: tf.io.FixedLenFeature([], tf.string)}
    for batch in dataset:
        text = tf.io.parse_example(batch, spec)[features.TEXT_KEY]
        records += int(tf.shape(text)[0])
        chars += int(tf.reduce_sum(tf.strings.length(text, unit="UTF8_CHAR")))
    return records, chars


def text_example_gen(input_base: str, pattern: str, mode: str, seq_length: int,
                     eval_fraction: float, encoding_errors: str,
                     code_fingerprint: str, span_count: int = 1) -> FileBasedExampleGen:
    """The ExampleGen component for files under `input_base` matching `pattern`.

    `pattern` may contain TFX's {SPAN} placeholder: the latest span is read, with the
    span_count - 1 spans before it (1 when a span resolver hands Transform the range:
    components/span_resolver.py). The code fingerprint only serves to invalidate
    TFX's cache when this project's code changes.
    """
    settings = struct_pb2.Struct()
    settings.update({"mode": mode, "seq_length": seq_length, "eval_fraction": eval_fraction,
                     "encoding_errors": encoding_errors, "code_fingerprint": code_fingerprint,
                     "span_pattern": pattern, "span_count": span_count})
    custom_config = example_gen_pb2.CustomConfig()
    custom_config.custom_config.Pack(settings)
    # The buckets only name the splits and document the ratio: the executor cuts each
    # file's tail (contiguous), it does not hash.
    eval_percent = max(1, int(round(eval_fraction * 100)))
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name=TRAIN, hash_buckets=100 - eval_percent),
        example_gen_pb2.SplitConfig.Split(name=EVAL, hash_buckets=eval_percent),
    ]))
    return FileBasedExampleGen(
        input_base=input_base,
        input_config=example_gen_utils.make_default_input_config(pattern),
        output_config=output_config,
        custom_config=custom_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(TextExampleGenExecutor),
    ).with_id(names.EXAMPLE_GEN)
