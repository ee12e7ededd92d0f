"""Server-side batching as TF Serving does it: concurrent requests to one signature of a
loaded version are merged along dimension 0 into one model call, and the outputs are
split back by rows.

The parameters are TF Serving's (settings.BatchingParameters, read from the same
--batching_parameters_file), with TF Serving's answers: a request with more rows than
max_batch_size is INVALID_ARGUMENT, one that would make the queue hold more than
max_enqueued_batches batches is UNAVAILABLE at once.

Two differences. A merged call that fails is run again request by request, so that a bad
request fails only itself (TF Serving answers every request of the batch with its
error). And so that batching never taxes a lone caller: a batch that is not full
closes as soon as it holds as many requests as the largest batch of the last second
(a lone caller's requests run at once; sixteen streams wait for each other), and at the
latest batch_timeout_micros after it could have run (a thread free, the previous batch
of its signature answered) — TF Serving counts from the first request's arrival, which
lets a caller that just got its answer miss the next batch.
"""
import collections
import logging
import threading
import time
from typing import Callable, Deque, Dict, List, Mapping, Optional

import numpy as np

from serving.deadlines import CancelToken
from serving.errors import ServingError, invalid_argument
from serving.settings import BatchingParameters

logger = logging.getLogger("textgen.serving")

# How long the size of past batches predicts the next one's.
_PEAK_WINDOW_SECONDS = 1.0

Run = Callable[[str, Mapping[str, np.ndarray], CancelToken], Dict[str, np.ndarray]]


def check_rows(rows: int, parameters: BatchingParameters) -> None:
    """TF Serving's answer to a request with more rows than one batch holds."""
    if rows > parameters.max_batch_size:
        raise invalid_argument(f"Task size {rows} is larger than maximum input batch size "
                               f"{parameters.max_batch_size} (max_batch_size of the batching "
                               "parameters): send fewer rows per request")


class _Task:
    __slots__ = ("feeds", "rows", "cancel", "done", "outputs", "error", "enqueued")

    def __init__(self, feeds: Mapping[str, np.ndarray], rows: int, cancel: CancelToken):
        self.feeds = feeds
        self.rows = rows
        self.cancel = cancel
        self.done = threading.Event()
        self.outputs: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[ServingError] = None
        self.enqueued = time.monotonic()


class _Queue:
    """The waiting requests of one signature."""

    def __init__(self):
        self.tasks: Deque[_Task] = collections.deque()
        self.rows = 0
        self.open_since = 0.0  # when its oldest task could first have run
        self.recent: Deque = collections.deque()  # (time, requests) of recent batches
        self.running = 0


class Batcher:
    """Merges the requests of one loaded version; `run(signature, feeds, cancel)` is one
    model call on merged feeds (every output batch-major)."""

    def __init__(self, parameters: BatchingParameters, run: Run, name: str = ""):
        self.parameters = parameters
        self._run = run
        self._cond = threading.Condition()
        self._queues: Dict[str, _Queue] = {}
        self._closed = False
        self.batches = 0  # model calls made, and
        self.batched_requests = 0  # the requests they answered (their ratio: merging)
        self.largest_batch = 0  # most requests merged into one call
        self.split_batches = 0  # merged calls that failed, then ran request by request
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"batch-{name}-{i}")
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, signature: str, feeds: Mapping[str, np.ndarray], rows: int,
               cancel: CancelToken) -> Dict[str, np.ndarray]:
        """Runs one request's feeds in a batch; returns its rows of every output."""
        check_rows(rows, self.parameters)
        limit = self.parameters.max_batch_size
        task = _Task(feeds, rows, cancel)
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "the model version is unloading; retry")
            queue = self._queues.setdefault(signature, _Queue())
            batches = -(-(queue.rows + rows) // limit)
            if batches > self.parameters.max_enqueued_batches:
                raise ServingError(
                    "UNAVAILABLE", "The batch scheduling queue to which this task was submitted "
                    f"is full ({self.parameters.max_enqueued_batches} batches of up to {limit} "
                    "rows wait; max_enqueued_batches of the batching parameters): retry later")
            if not queue.tasks:
                queue.open_since = task.enqueued
            queue.tasks.append(task)
            queue.rows += rows
            self._cond.notify_all()
        cancel.on_cancel(lambda: self._drop(signature, task))
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def pending(self) -> Dict[str, tuple]:
        """{signature: (requests waiting, batches running)}."""
        with self._cond:
            return {name: (len(queue.tasks), queue.running)
                    for name, queue in self._queues.items()}

    def close(self) -> None:
        """Answers what still waits with UNAVAILABLE and stops the threads."""
        with self._cond:
            self._closed = True
            for queue in self._queues.values():
                for task in queue.tasks:
                    self._finish(task, error=ServingError(
                        "UNAVAILABLE", "the model version unloaded before the request ran"))
                queue.tasks.clear()
                queue.rows = 0
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    # --- inside ---------------------------------------------------------------------

    def _drop(self, signature: str, task: _Task) -> None:
        """A cancelled request stops waiting; if still queued, it leaves the queue."""
        with self._cond:
            queue = self._queues[signature]
            if task in queue.tasks:
                queue.tasks.remove(task)
                queue.rows -= task.rows
        self._finish(task, error=ServingError(task.cancel.code, task.cancel.message))

    @staticmethod
    def _finish(task: _Task, outputs=None, error=None) -> None:
        if task.done.is_set():
            return
        task.outputs, task.error = outputs, error
        task.done.set()

    def _expected(self, queue: _Queue, now: float) -> int:
        while queue.recent and queue.recent[0][0] < now - _PEAK_WINDOW_SECONDS:
            queue.recent.popleft()
        return max((n for _, n in queue.recent), default=1)

    def _ready(self, now: float):
        """(signature, seconds to wait): a queue whose batch should run now (wait 0), or
        the soonest time one will be due."""
        timeout = self.parameters.batch_timeout_micros / 1e6
        best, wait = None, None
        for signature, queue in self._queues.items():
            if not queue.tasks:
                continue
            due = queue.open_since + timeout
            if (queue.rows >= self.parameters.max_batch_size or now >= due
                    or len(queue.tasks) >= self._expected(queue, now)):
                if best is None or queue.open_since < self._queues[best].open_since:
                    best = signature
                wait = 0.0
            elif wait != 0.0:
                wait = due - now if wait is None else min(wait, due - now)
        return best, wait

    def _take(self, signature: str, now: float) -> List[_Task]:
        queue = self._queues[signature]
        taken, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.parameters.max_batch_size:
            task = queue.tasks.popleft()
            taken.append(task)
            rows += task.rows
        queue.rows -= rows
        queue.open_since = now
        queue.recent.append((now, len(taken)))
        queue.running += 1
        return taken

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    signature, wait = self._ready(now)
                    if signature is not None:
                        break
                    self._cond.wait(wait)
                tasks = self._take(signature, now)
            self._run_batch(signature, tasks)
            with self._cond:
                queue = self._queues[signature]
                queue.running -= 1
                # Those just answered are about to send their next request: give them
                # the timeout to make this batch.
                queue.open_since = max(queue.open_since, time.monotonic())
                self._cond.notify_all()

    def _run_batch(self, signature: str, tasks: List[_Task]) -> None:
        # The merged call stops early only when every request in it was cancelled.
        cancel = CancelToken()
        remaining = [len(tasks)]
        lock = threading.Lock()

        def one_gone():
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    cancel.cancel("CANCELLED", "every request of the batch was cancelled")
        for task in tasks:
            task.cancel.on_cancel(one_gone)
        names = tasks[0].feeds.keys()
        merged = {name: np.concatenate([task.feeds[name] for task in tasks], axis=0)
                  for name in names}
        try:
            outputs = self._run(signature, merged, cancel)
        except Exception as err:  # noqa: BLE001 - every waiting caller must get an answer
            waiting = [task for task in tasks if not task.done.is_set()]
            if len(waiting) > 1:
                # One request's input (a value only the graph checks) fails the merged
                # call for all: each runs again alone, so that each gets its own answer.
                self.split_batches += 1
                for task in waiting:
                    self._run_batch(signature, [task])
                return
            if not isinstance(err, ServingError):
                logger.exception("batch of %s failed", signature)
                err = ServingError("INTERNAL", f"{type(err).__name__}: {err}")
            for task in waiting:
                self._finish(task, error=err)
            return
        self.batches += 1
        self.batched_requests += len(tasks)
        self.largest_batch = max(self.largest_batch, len(tasks))
        start = 0
        for task in tasks:
            end = start + task.rows
            self._finish(task, outputs={name: value[start:end]
                                        for name, value in outputs.items()})
            start = end
