"""Where a run's output goes: this project's progress lines to the terminal, the rest of
what the stack prints (TensorFlow's C++ logs, absl, Beam, deprecation notes, warnings)
into a log file under the pipeline root, whose path the summary prints.

With verbose, everything stays on the terminal as well, at INFO level.
"""
import contextlib
import logging
import os
import sys
from typing import Iterator

# Loggers of this project's packages: their INFO lines are the progress a user reads.
OURS = ("textgen", "components", "models", "pipeline", "serving")
# LocalDagRunner's lines (through absl) as each component starts and ends: progress too.
_STAGE_LINES = {"Component %s is running.": "%s started",
                "Component %s is finished.": "%s finished"}
LOG_FILE = "textgen.log"
_FORMAT = "%(asctime)s %(name)s: %(message)s"


def log_path(pipeline_root: str) -> str:
    return os.path.join(pipeline_root, LOG_FILE)


@contextlib.contextmanager
def run_output(pipeline_root: str, verbose: bool) -> Iterator[str]:
    """Routes the run's output while the block runs; yields the log file's path.

    Python logging: this project's loggers → terminal and file; everything else → file.
    File descriptor 2 → the file too, unless verbose: C++ code writes there, below Python,
    and so do sys.stderr's writers (the interpreter's "Exception ignored" reports among
    them); the progress lines keep a handle on the terminal. Under a sys.stderr that has no
    file descriptor (a test's capture), fd 2 is left alone. Print progress through the
    "textgen" logger, not to sys.stderr.
    """
    path = log_path(pipeline_root)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    terminal_fd = _redirect_fd2(path) if not verbose else None
    terminal = (open(terminal_fd, "w", buffering=1, encoding="utf-8", closefd=False)
                if terminal_fd is not None else sys.stderr)
    console = logging.StreamHandler(terminal)
    console.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.handlers = [file_handler, console]
    root.setLevel(logging.INFO)
    if not verbose:
        console.addFilter(_progress_only)
    logging.captureWarnings(True)
    from absl import logging as absl_logging
    saved_absl = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # TFX's INFO lines: in the file
    try:
        yield path
    finally:
        absl_logging.set_verbosity(saved_absl)
        logging.captureWarnings(False)
        root.setLevel(saved[0])
        root.handlers = saved[1]
        file_handler.close()
        if terminal_fd is not None:
            terminal.flush()
            os.dup2(terminal_fd, 2)
            os.close(terminal_fd)


@contextlib.contextmanager
def framework_quiet(verbose: bool) -> Iterator[None]:
    """For commands that print a result rather than run a pipeline (`textgen runs`): the
    frameworks' INFO lines (ML Metadata's "MetadataStore with DB connection initialized")
    stay off the terminal unless verbose, whatever handlers an embedding process (Airflow,
    a notebook) has put on the root logger."""
    if verbose:
        yield
        return
    quiet = _QuietFrameworks()
    root = logging.getLogger()
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


class _QuietFrameworks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OURS


def _progress_only(record: logging.LogRecord) -> bool:
    if record.name.split(".")[0] in OURS:
        return True
    if record.name == "absl" and record.msg in _STAGE_LINES:
        # The console comes after the file among the root's handlers: the file keeps the
        # original line.
        record.name, record.msg = "textgen", _STAGE_LINES[record.msg]
        return True
    return False


def _redirect_fd2(path: str):
    """Points fd 2 at the log file; returns a duplicate of the terminal's fd, or None when
    sys.stderr is not fd 2 (nothing to redirect)."""
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
    return terminal_fd
