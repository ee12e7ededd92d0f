"""The last N spans from ML Metadata (components/span_resolver.py): the strategy on
artifacts in memory, then in real LocalDagRunner runs of the ExampleGen and the resolver."""
import os

from tfx import v1 as tfx
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from components import names, span_resolver
from components.text_example_gen import text_example_gen
from pipeline import metadata, pipeline as pipeline_lib
from test_pipeline_e2e import make_corpus


def _examples(artifact_id, span, cut="a", created=None):
    artifact = tfx.types.standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property(names.SPAN, span)
    artifact.set_string_custom_property(names.CUT_FINGERPRINT, cut)
    artifact.mlmd_artifact.create_time_since_epoch = created or artifact_id
    return artifact


def _resolve(current, examples, span_count):
    range_config = tfx.proto.RangeConfig(
        rolling_range=tfx.proto.RollingRange(num_spans=span_count))
    strategy = span_resolver.LatestSpansStrategy(range_config=range_config)
    resolved = strategy.resolve_artifacts(None, {span_resolver.CURRENT: current,
                                                 names.EXAMPLES: examples})
    return [a.id for a in resolved[names.EXAMPLES]]


def test_the_last_n_spans_one_artifact_each_ending_at_the_current_span():
    first_3, span_1, first_2, span_3, span_4, again_2 = (
        _examples(1, 3), _examples(2, 1), _examples(3, 2), _examples(4, 3), _examples(5, 4),
        _examples(6, 2))
    everything = [first_3, span_1, first_2, span_3, span_4, again_2]
    # Spans 2 and 3 were read twice (a changed file): the current run's artifact stands for
    # its span, the newest for the others; span 4 (its data removed since) is left out.
    assert _resolve([span_3], everything, 3) == [2, 6, 4]
    assert _resolve([first_3], everything, 2) == [6, 1]
    # A gap is skipped, not filled from further back (as the ExampleGen's own range does).
    assert _resolve([span_4], [span_1, first_2, span_4], 2) == [5]
    assert _resolve([span_1], everything, 5) == [2]


def test_spans_cut_another_way_are_left_out():
    old_cut = [_examples(1, 1, cut="seq40"), _examples(2, 2, cut="seq40")]
    current = _examples(3, 3, cut="seq80")
    assert _resolve([current], old_cut + [current], 3) == [3]


def test_under_airflow_every_artifact_arrives_as_current_and_the_newest_is_this_runs():
    artifacts = [_examples(1, 1), _examples(2, 2), _examples(3, 1, created=99)]
    assert _resolve(artifacts, artifacts, 2) == [3]


def _run(root, data, span_count, seq_length=40):
    example_gen = text_example_gen(
        input_base=str(data), pattern="span-{SPAN}/*.txt", mode="stream",
        seq_length=seq_length, eval_fraction=0.1, encoding_errors="strict",
        code_fingerprint="test")
    resolver = span_resolver.span_resolver(example_gen.outputs[names.EXAMPLES], span_count)
    LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="spans", pipeline_root=str(root), components=[example_gen, resolver],
        enable_cache=True,
        metadata_connection_config=tfx_metadata.sqlite_metadata_connection_config(
            metadata.sqlite_path(str(root))),
        beam_pipeline_args=pipeline_lib.default_beam_args()))
    store = metadata.open_store(str(root))
    run = metadata.node_runs(store, metadata.pipeline_runs(store)[-1])
    resolved = run[names.SPAN_RESOLVER].outputs[names.EXAMPLES]
    return run[names.EXAMPLE_GEN].state, [metadata.custom(a, names.SPAN) for a in resolved]


def test_local_runs_read_each_span_once_and_resolve_the_range(tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    for span in (1, 2, 3):
        os.makedirs(data / f"span-{span}")
        make_corpus(data / f"span-{span}" / "part.txt", chars=3_000, seed=span)
        assert _run(root, data, span_count=2) == ("COMPLETE", [1, 2, 3][max(0, span - 2):span])
    assert _run(root, data, span_count=3) == ("CACHED", [1, 2, 3])
    # Other data settings: the older spans were cut with seq_length 40, so they are left out.
    assert _run(root, data, span_count=3, seq_length=20) == ("COMPLETE", [3])
