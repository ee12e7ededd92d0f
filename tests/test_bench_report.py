"""bench/report.py renders docs/benchmarks.md from results; bench/quality.py's bookkeeping."""
import json
import math

import pytest

from bench import common, quality, report


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    docs.mkdir()
    monkeypatch.setattr(common, "RESULTS_DIR", str(results))
    monkeypatch.setattr(common, "DOCS_DIR", str(docs))
    monkeypatch.setattr(common, "REPO", str(tmp_path))
    monkeypatch.setattr(report, "DOC", str(docs / "benchmarks.md"))
    return results, docs


MACHINE = {"cpu": "Test CPU", "cores": "2", "tensorflow": "2.16.2", "python": "3.11",
           "date": "today", "vector_extensions": "avx2"}


def epoch(n, train, evaluation):
    return {"epoch": n, "train_loss": train, "eval_loss": evaluation, "learning_rate": 1e-3,
            "cpu_seconds": 1800.0, "train_wall_seconds": 900.0}


def quality_state(epochs, done=True):
    spec = quality.TRIES[0]
    from dataclasses import asdict
    best = min(range(len(epochs)), key=lambda i: epochs[i]["eval_loss"]) + 1
    return {"try": asdict(spec), "epochs": epochs, "learning_rate": 1e-3, "best_epoch": best,
            "done": done, "stopped": "eval loss did not improve for 1 epoch" if done else None,
            "streamed_eval_loss": 1.5 if done else None, "params": 4_000_000}


def test_summarize_reports_the_best_epoch_in_nats_bits_and_perplexity():
    s = quality.summarize(quality_state([epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6),
                                         epoch(3, 1.2, 1.7)]))
    assert s["best_epoch"] == 2 and s["best_eval_loss"] == 1.6
    assert s["bits"] == pytest.approx(1.6 / math.log(2))
    assert s["perplexity"] == pytest.approx(math.exp(1.6))
    assert s["train_loss_at_best"] == 1.5
    assert s["cpu_hours"] == pytest.approx(1.5)


def test_a_try_whose_settings_changed_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "QUALITY_DIR", str(tmp_path))
    run = quality.Run(quality.TRIES[0])
    run.state["try"]["dropout"] = 0.5
    run.save()
    with pytest.raises(SystemExit, match="different setting.*delete"):
        quality.Run(quality.TRIES[0])


def finished(spec, epochs, tmp_path):
    run = quality.Run(spec)
    run.state.update(epochs=epochs, best_epoch=2, done=True, params=4_000_000,
                     stopped="eval loss did not improve for 1 epoch")
    run.save()
    for name in ("last.index", "last.data-00000-of-00001", "best.weights.h5"):
        (tmp_path / spec.name / name).write_text(name)
    return run


def test_a_schedule_try_takes_over_the_epochs_it_shares_with_an_earlier_try(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(quality, "QUALITY_DIR", str(tmp_path))
    by_name = {t.name: t for t in quality.TRIES}
    parent = finished(by_name["dropout"],
                      [epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6), epoch(3, 1.2, 1.7)], tmp_path)
    child = quality.Run(by_name["dropout_lr_plateau"])
    quality.take_over(child, parent, patience=3)

    assert [e["eval_loss"] for e in child.state["epochs"]] == [1.9, 1.6, 1.7]
    assert child.state["best_epoch"] == 2
    # Epoch 3 did not improve: the schedule has already cut the rate for epoch 4.
    assert child.state["learning_rate"] == pytest.approx(1e-3 * 0.3)
    assert child.state["took_over"] == {"try": "dropout", "epochs": 3}
    assert (tmp_path / "dropout_lr_plateau" / "last.index").read_text() == "last.index"
    again = quality.Run(by_name["dropout_lr_plateau"])  # saved: a restart resumes from it
    assert again.state["epochs"] == child.state["epochs"]
    assert quality.summarize(again.state)["took_over"]["epochs"] == 3


def test_taking_over_is_refused_when_the_runs_would_not_have_been_identical(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(quality, "QUALITY_DIR", str(tmp_path))
    by_name = {t.name: t for t in quality.TRIES}
    child = quality.Run(by_name["dropout_lr_plateau"])

    unfinished = quality.Run(by_name["dropout"])
    unfinished.state["epochs"] = [epoch(1, 2.0, 1.9)]
    with pytest.raises(SystemExit, match="train that first.*--tries dropout,dropout_lr"):
        quality.take_over(child, unfinished, patience=3)

    other_model = finished(by_name["lstm"], [epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6)],
                           tmp_path)
    with pytest.raises(SystemExit, match="differ in \\['cell'\\]"):
        quality.take_over(child, other_model, patience=3)

    long_plateau = finished(by_name["dropout"], [epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6),
                                                 epoch(3, 1.2, 1.7), epoch(4, 1.1, 1.8)],
                            tmp_path)
    with pytest.raises(SystemExit, match="learning rate 0.001.*would use 0.0003"):
        quality.take_over(child, long_plateau, patience=3)
    with pytest.raises(SystemExit, match="would have stopped before 'dropout''s epoch 4"):
        quality.take_over(child, long_plateau, patience=1)
    assert not child.state["epochs"]


def test_report_says_what_to_run_when_nothing_was_measured(dirs):
    _, docs = dirs
    report.main()
    doc = (docs / "benchmarks.md").read_text()
    assert doc.count("_Not measured yet: run `make bench`._") >= 4
    assert "run `make bench-quality`" in doc


def test_report_renders_quality_tables_plot_and_notes(dirs, tmp_path):
    results, docs = dirs
    state = quality_state([epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6), epoch(3, 1.2, 1.7)])
    scored = {"words_in_training": 0.9, "distinct_2": 0.8, "distinct_3": 0.95,
              "longest_copy_chars": 21, "median_longest_copy_chars": 15.0,
              "longest_copy": "the king"}
    data = {"machine": MACHINE,
            "train_chars": 900, "eval_chars": 100, "vocab_size": 67, "batch": 64,
            "patience": 1, "max_epochs": 30,
            "tries": {"tutorial": quality.summarize(state)},
            "text_quality": {"model": "tutorial", "samples": 10, "sample_chars": 1000,
                             "prompt": "\n", "temperatures": {
                                 "0.5": {**scored, "example": "KING:\nNo."}},
                             "held_out_text": scored}}
    (results / "quality.json").write_text(json.dumps(data))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "NOTES.md").write_text("Reading: ours is fine.\n")
    report.main()
    doc = (docs / "benchmarks.md").read_text()
    assert "| `tutorial` |" in doc and "**1.6000**" in doc
    assert "2 of 3" in doc  # best epoch of epochs run
    assert "1.4697" in doc and "1.8800" in doc
    assert "held-out real text" in doc and "'the king'" in doc
    assert "Test CPU" in doc and "avx2" in doc
    assert doc.rstrip().endswith("Reading: ours is fine.")
    assert (docs / "bench_quality.png").stat().st_size > 1000


def test_report_says_which_epochs_a_try_took_over(dirs):
    results, docs = dirs
    state = quality_state([epoch(1, 2.0, 1.9), epoch(2, 1.5, 1.6), epoch(3, 1.2, 1.7),
                           epoch(4, 1.1, 1.5)])
    state["took_over"] = {"try": "dropout", "epochs": 3}
    (results / "quality.json").write_text(json.dumps(
        {"machine": MACHINE, "train_chars": 900, "eval_chars": 100, "vocab_size": 67,
         "batch": 64, "patience": 1, "max_epochs": 30,
         "tries": {"dropout_lr_plateau": quality.summarize(state)}}))
    report.main()
    doc = (docs / "benchmarks.md").read_text()
    assert "epochs 1-3 are `dropout`'s" in doc and "4 of 4" in doc


def test_commands_are_recorded_as_typed_in_the_repository(monkeypatch):
    monkeypatch.setattr(common, "REPO", "/tmp/clone/textgen")
    recorded = common.as_run_from_repo(
        "run --data /tmp/clone/shared/data/t.txt --pipeline-root /tmp/clone/textgen/bench/out/p")
    assert recorded == "run --data ../shared/data/t.txt --pipeline-root bench/out/p"
    assert common.as_run_from_repo("run --data /elsewhere/t.txt") == "run --data /elsewhere/t.txt"
