"""`textgen`: the command line, one parser over both halves of the project: the
pipeline's subcommands (run, runs, compile: pipeline/cli.py) and serving's (serve,
generate: serving/cli.py). Each half adds its own; the error type and exit codes are
pipeline/errors.py's.

Why a module of its own, beside the packages: the one command spans the pipeline and
serving, which stay independent of each other (`pipeline` never imports `serving`, so a
pipeline worker never loads the server; `serving` takes only the command line's error
type from `pipeline`). Dispatching from either package would make it import the other;
a single top-level module rather than a package, because the top-level layout (the
packages TFX names code by, plus tests/, bench/, deploy/, docs/) stays as it is.

Nothing here imports TensorFlow or TFX, so `textgen --help` and bad input answer at once.
"""
import argparse
import sys
import warnings
from typing import List, Optional

from pipeline import cli as pipeline_cli
from pipeline.errors import EXIT_BAD_INPUT, CliError
from serving import cli as serving_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textgen",
        description="Raw text → TFX pipeline → character-level RNN generator served by "
                    "TensorFlow Serving.")
    sub = parser.add_subparsers(dest="command", required=True)
    pipeline_cli.add_parsers(sub)
    serving_cli.add_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # google-cloud libraries warn about Python versions on import: not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"textgen: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
