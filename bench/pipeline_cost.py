"""What a pipeline run costs: wall time per component (from ML Metadata), the whole run,
a cached re-run, and `textgen --help` start-up."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from bench import common
from pipeline import summary as summary_lib

SMALL = ["--epochs", "1", "--steps-per-epoch", "20", "--eval-steps", "5", "--rnn-units", "1024",
         "--sample-chars", "100"]


def textgen(*args):
    return [os.path.join(os.path.dirname(sys.executable), "textgen"), *args]


def run_pipeline(root, serving):
    cmd = textgen("run", "--data", common.SHAKESPEARE, "--pipeline-root", root,
                  "--serving-dir", serving, *SMALL)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(root, summary_lib.SUMMARY_FILE), encoding="utf-8") as f:
        summary = json.load(f)
    return {"wall_seconds": seconds, "components": summary["components"],
            "command": common.as_run_from_repo(" ".join(cmd[1:]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep-root", default=os.path.join(common.OUT_DIR, "pipeline_root"),
                        help="where the run's pipeline root is kept (the training bench reads "
                             "its Transform output)")
    args = parser.parse_args(argv)
    root, serving = args.keep_root, os.path.join(common.OUT_DIR, "serving")
    for path in (root, serving):
        shutil.rmtree(path, ignore_errors=True)
    first = run_pipeline(root, serving)
    cached = run_pipeline(root, serving)
    help_times = [common.timed(lambda: subprocess.run(textgen("--help"), capture_output=True,
                                                      check=True)) for _ in range(5)]
    results = {"first": first, "cached": cached, "help": common.summary(help_times),
               "pipeline_root": common.as_run_from_repo(root)}
    common.save_result("pipeline_cost", results)
    print(json.dumps({"first": round(first["wall_seconds"]), "cached":
                      round(cached["wall_seconds"]),
                      "help": round(results["help"]["median"], 2)}))
    return results


if __name__ == "__main__":
    main()
