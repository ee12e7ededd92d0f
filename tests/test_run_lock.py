"""The pipeline-root lock: a second run refuses at once, or waits for the first."""
import os
import subprocess
import sys

import pytest

from pipeline import cli
from pipeline.lock import LOCK_NAME, LockBusy, PipelineLock, holder_of
import textgen_cli

HOLD = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from pipeline.lock import PipelineLock
with PipelineLock(sys.argv[1]):
    print("held", flush=True)
    # Hold until the test removes the release file (bounded, in case the test dies).
    for _ in range(600):
        try:
            open(sys.argv[2]).close()
        except OSError:
            break
        time.sleep(0.1)
"""

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path/root until release() is called."""
    root = tmp_path / "root"
    root.mkdir()
    release_file = tmp_path / "release"
    release_file.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(release_file), REPO],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"

    def release():
        release_file.unlink()
        proc.wait(timeout=60)

    yield {"root": str(root), "pid": proc.pid, "release": release}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_run_refuses_and_names_the_holder(holder):
    with pytest.raises(LockBusy) as err:
        with PipelineLock(holder["root"], timeout=0):
            pytest.fail("got a lock another process holds")
    message = str(err.value)
    assert f"pid {holder['pid']}" in message and "--lock-timeout" in message
    assert holder["root"] in message


def test_a_waiting_run_gets_the_lock_once_released(holder):
    # Released after the waiter has started waiting: the waiter must then get it.
    import threading
    timer = threading.Timer(1.0, holder["release"])
    timer.start()
    try:
        with PipelineLock(holder["root"], timeout=120, poll=0.1):
            assert holder_of(os.path.join(holder["root"], LOCK_NAME)).startswith(
                f"pid {os.getpid()} ")
    finally:
        timer.join()


def test_the_lock_dies_with_its_holder(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "keep").write_text("")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(tmp_path / "keep"), REPO],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    with PipelineLock(str(root), timeout=0):
        pass


def test_cli_exits_75_with_a_clear_message_before_any_work(holder, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 40)
    code = textgen_cli.main(["run", "--data", str(corpus), "--pipeline-root", holder["root"],
                             "--serving-dir", str(tmp_path / "serving"), "--seq-length", "20"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BUSY == 75
    assert "is in use by another textgen run" in err and f"pid {holder['pid']}" in err
    # Nothing was written into the root by the refused run.
    assert sorted(os.listdir(holder["root"])) == [LOCK_NAME]


def test_lock_timeout_must_not_be_negative(capsys):
    assert textgen_cli.main(["run", "--lock-timeout", "-1"]) == 2
    assert "run.lock_timeout" in capsys.readouterr().err
