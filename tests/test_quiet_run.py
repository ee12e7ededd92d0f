"""A successful `textgen run` in its own process: the terminal holds the run's progress and
summary only; what the stack prints goes to the log file the summary names."""
import os
import subprocess
import sys

from test_pipeline_e2e import TINY, make_corpus

# What TensorFlow, TFX, Beam and the interpreter print on a good run (issue 17).
NOISE = ["Unable to register", "cuFFT", "cuDNN", "cuBLAS", "property_predicate",
         "Instructions for updating", "is deprecated", "crcmod", "Exception ignored",
         "Traceback", "WARNING", "FutureWarning"]


def test_a_successful_run_prints_progress_and_no_framework_noise(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    root = tmp_path / "root"
    textgen = os.path.join(os.path.dirname(sys.executable), "textgen")
    result = subprocess.run(
        [textgen, "run", "--data", corpus, "--pipeline-root", str(root),
         "--serving-dir", str(tmp_path / "serving"), "--max-perplexity", "200", *TINY],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    for noise in NOISE:
        assert noise not in err, f"{noise!r} on the terminal:\n{err}"
    # The progress lines: stages, epochs with their losses.
    for line in ("TextExampleGen started", "Trainer finished", "Pusher finished",
                 "epoch 2: train loss"):
        assert line in err, f"{line!r} missing:\n{err}"
    assert "blessed: yes" in result.stdout
    # Keras' own epoch lines ("Epoch 1/2", "3/3 - 1s - loss: ...") would repeat ours.
    assert "Epoch 1/" not in result.stdout and " - loss: " not in result.stdout, result.stdout
    log = root / "textgen.log"
    assert f"log (TFX, Beam and TensorFlow output): {log}" in result.stdout
    # Routed, not lost: TFX's and TensorFlow's own lines are in the file.
    text = log.read_text(encoding="utf-8")
    assert "Component Trainer is running." in text and "Unable to register" in text
