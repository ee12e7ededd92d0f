"""One run at a time per pipeline root: an exclusive fcntl.flock on <root>/.textgen.lock.

Two overlapping scheduled runs would otherwise write the same ML Metadata and
serving directory at once. flock is released by the kernel when the holder exits,
however it exits (crash, kill -9), so a stale lock cannot block later runs. It needs a
local filesystem: on NFS use one scheduler (Airflow's max_active_runs=1 does this).
"""
import datetime
import fcntl
import hashlib
import json
import os
import socket
import time
from typing import Optional

LOCK_NAME = ".textgen.lock"


def local_lock_dir(pipeline_root: str, cache_dir: str) -> str:
    """The root itself when local; for a remote root (gs://...), a folder on this machine
    named after it: flock needs a local file, and overlapping cron runs are local."""
    if "://" not in pipeline_root:
        return pipeline_root
    folder = os.path.join(cache_dir, "locks", hashlib.sha256(pipeline_root.encode())
                          .hexdigest()[:16])
    os.makedirs(folder, exist_ok=True)
    return folder


class LockBusy(RuntimeError):
    """Another run holds the pipeline root; the message says which and what to do."""


class PipelineLock:
    """Context manager: waits up to `timeout` seconds (0: not at all) for the lock."""

    def __init__(self, pipeline_root: str, timeout: float = 0.0, poll: float = 1.0):
        self.path = os.path.join(pipeline_root, LOCK_NAME)
        self.timeout, self.poll = timeout, poll
        self._fd: Optional[int] = None

    def __enter__(self) -> "PipelineLock":
        # O_RDWR without O_TRUNC: the holder's description stays readable to waiters.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = holder_of(self.path)
                    os.close(fd)
                    waited = f"after waiting {self.timeout:g} s" if self.timeout else "now"
                    raise LockBusy(
                        f"pipeline root {os.path.dirname(self.path)} is in use by another "
                        f"textgen run ({holder}); not starting {waited}. Pass --lock-timeout "
                        "SECONDS (run.lock_timeout) to wait for it instead") from None
                time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder_of(path: str) -> str:
    """Who holds the lock, as the holder wrote it ("unknown" while it is starting)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
