"""Cancelling requests: a token a request's computation listens to, and one timer thread
that cancels the tokens whose deadline has passed.

A request thread is busy inside TensorFlow while it runs, so it cannot time itself out;
the timer thread does it for every request, rather than one timer thread per request.
"""
import contextlib
import heapq
import itertools
import threading
import time
from typing import Callable, Iterator, List, Optional, Tuple


class CancelToken:
    """Set once, with a status code and a message; listeners run when it is set."""

    def __init__(self):
        self._lock = threading.Lock()
        self._listeners: List[Callable[[], None]] = []
        self.code: Optional[str] = None
        self.message = ""

    @property
    def cancelled(self) -> bool:
        return self.code is not None

    def cancel(self, code: str, message: str) -> None:
        with self._lock:
            if self.code is not None:
                return  # the first reason wins: a deadline, or the client going away
            self.code, self.message = code, message
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def on_cancel(self, listener: Callable[[], None]) -> None:
        """Runs `listener` when the token is cancelled (at once if it already is)."""
        with self._lock:
            if self.code is None:
                self._listeners.append(listener)
                return
        listener()


class Watchdog:
    """Cancels tokens whose deadline passes while their request is still running."""

    def __init__(self):
        self._cond = threading.Condition()
        # (due, tiebreak, entry); entry is [token, message] while its request runs, and
        # [None, ""] once it ended or was cancelled (removed lazily, see guard()).
        self._heap: List[Tuple[float, int, list]] = []
        self._ended = 0  # entries in the heap whose request already ended
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    @contextlib.contextmanager
    def guard(self, seconds: float, token: CancelToken, message: str) -> Iterator[None]:
        """Cancels `token` with DEADLINE_EXCEEDED and `message` if the block runs longer
        than `seconds`."""
        entry = [token, message]
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="request-deadlines",
                                                 daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), entry))
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                if entry[0] is not None:  # still in the heap: not fired
                    entry[:] = [None, ""]
                    self._ended += 1
                # Ended entries wait in the heap until they come due; under steady load
                # with a long timeout that is many, so drop them once they are the majority.
                if self._ended > 64 and self._ended * 2 > len(self._heap):
                    self._heap = [item for item in self._heap if item[2][0] is not None]
                    heapq.heapify(self._heap)
                    self._ended = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, _, entry = heapq.heappop(self._heap)
                token, message = entry
                if token is None:
                    self._ended -= 1
                entry[:] = [None, ""]
            if token is not None:
                token.cancel("DEADLINE_EXCEEDED", message)
