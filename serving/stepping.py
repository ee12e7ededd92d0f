"""Iteration-level scheduling of `generate`: concurrent requests share the model's steps,
not whole calls (Orca, OSDI '22; BatchMaker's cellular batching, EuroSys '18).

Request-level merging (serving/batching.py, and TF Serving's batching) runs a merged
`generate` call's loop to its longest row: a 20-character request that lands beside a
1,000-character one waits for all 1,000 steps, its finished row riding along. Here the
rows of every running request form one batch that advances in rounds of the `resume`
signature (models/export.py: from a state, some characters, the state after them):

- a request that arrives joins at the next round: its prompts are read first, in a call
  of their own merged with the others that arrived meanwhile (so the running rows do not
  step through them, and a prompt the graph refuses fails only the requests of that
  call: they are read again one request at a time); when nothing runs, that call also
  draws the first round;
- a round draws as many characters as the running row nearest its end still needs, at
  most `chunk` after a request arrived (the longest a newcomer waits to join, in steps);
  while none arrives, each round may draw twice the last one's, up to 8 × `chunk`, so a
  lone request costs few calls. A row leaves the batch the moment it is done, and its
  request is answered when its last row is;
- a row's draws are counted by its own position and seed (a seed of 0 is drawn here
  once, at arrival), so a seeded request gets the text `generate` gives it alone.

The parameters are the batching parameters: max_batch_size rows run at once (a request
with more is refused, as by the Batcher), and requests beyond max_enqueued_batches
batches' worth of waiting rows are refused with UNAVAILABLE.
"""
import collections
import logging
import threading
from typing import Callable, Deque, Dict, List, Mapping

import numpy as np

from serving.batching import check_rows
from serving.deadlines import CancelToken
from serving.errors import ServingError
from serving.settings import BatchingParameters

logger = logging.getLogger("textgen.serving")

Run = Callable[[Mapping[str, np.ndarray], CancelToken], Dict[str, np.ndarray]]
_SAMPLING = ("temperature", "top_k", "top_p", "seed")
_INT32_MAX = np.iinfo(np.int32).max
# While no request arrives, each round draws twice the last one's characters, up to
# this many times `chunk`.
_GROWTH = 8


class _Request:
    def __init__(self, feeds: Mapping[str, np.ndarray], cancel: CancelToken, rng):
        self.prompts = feeds["prompts"]
        self.rows = len(self.prompts)
        seeds = feeds["seed"].copy()
        random = seeds == 0
        seeds[random] = rng.integers(1, _INT32_MAX, size=int(random.sum()), dtype=np.int32)
        self.sampling = {**{name: feeds[name] for name in _SAMPLING}, "seed": seeds}
        self.remaining = feeds["num_chars"].astype(np.int64)
        self.cancel = cancel
        self.pieces: List[List[bytes]] = [[] for _ in range(self.rows)]
        self.left = self.rows  # rows not done yet
        self.done = threading.Event()
        self.outputs = None
        self.error = None

    def finish(self, error=None) -> None:
        if self.done.is_set():
            return
        if error is None:
            completion = np.array([b"".join(p) for p in self.pieces], dtype=object)
            self.outputs = {"completion": completion,
                            "text": np.array([bytes(p) + c for p, c in
                                              zip(self.prompts, completion)], dtype=object)}
        self.error = error
        self.done.set()


class _Row:
    __slots__ = ("request", "index", "states", "position")

    def __init__(self, request: _Request, index: int, states: np.ndarray):
        self.request, self.index, self.states, self.position = request, index, states, 0

    @property
    def remaining(self) -> int:
        return int(self.request.remaining[self.index])


class StepScheduler:
    """Steps the `generate` requests of one loaded version together; `run(feeds, cancel)`
    is one call of its `resume` signature."""

    def __init__(self, parameters: BatchingParameters, run: Run, state_size: int,
                 chunk: int, name: str = ""):
        self.parameters, self.chunk, self.state_size = parameters, chunk, state_size
        self._run = run
        self._cond = threading.Condition()
        self._waiting: Deque[_Request] = collections.deque()
        self._waiting_rows = 0
        self._running: List[_Row] = []
        self._round = chunk  # characters the next round draws at most
        self._closed = False
        self._rng = np.random.default_rng()
        self.rounds = 0  # calls that drew characters, and
        self.row_steps = 0  # the characters they drew (their ratio: rows per step)
        self.largest_batch = 0  # most rows in one round
        self.joined_running = 0  # requests that joined while others were running
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"steps-{name}")
        self._thread.start()

    def submit(self, feeds: Mapping[str, np.ndarray], rows: int,
               cancel: CancelToken) -> Dict[str, np.ndarray]:
        """Runs one `generate` request's rows (its checked feeds); returns its outputs."""
        check_rows(rows, self.parameters)
        limit = self.parameters.max_batch_size
        request = _Request(feeds, cancel, self._rng)
        if not request.remaining.any():  # nothing to draw: the prompts come back as they are
            request.finish()
            return request.outputs
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "the model version is unloading; retry")
            if self._waiting_rows + rows > limit * self.parameters.max_enqueued_batches:
                raise ServingError(
                    "UNAVAILABLE", f"{self._waiting_rows} rows wait to join the running "
                    f"generation (max_enqueued_batches {self.parameters.max_enqueued_batches} "
                    f"of max_batch_size {limit}): retry later")
            self._waiting.append(request)
            self._waiting_rows += rows
            self._cond.notify_all()
        cancel.on_cancel(lambda: self._drop(request))
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs

    def pending(self) -> tuple:
        """(requests waiting to join, rows running)."""
        with self._cond:
            return len(self._waiting), len(self._running)

    def close(self) -> None:
        """Answers what waits or runs with UNAVAILABLE and stops the thread."""
        with self._cond:
            self._closed = True
            gone = ServingError("UNAVAILABLE", "the model version unloaded before the "
                                "request finished")
            for request in list(self._waiting) + [row.request for row in self._running]:
                request.finish(gone)
            self._waiting.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # --- inside ---------------------------------------------------------------------

    def _drop(self, request: _Request) -> None:
        """A cancelled request is answered at once; its rows leave at the next round."""
        with self._cond:
            if request in self._waiting:
                self._waiting.remove(request)
                self._waiting_rows -= request.rows
        request.finish(ServingError(request.cancel.code, request.cancel.message))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    return
                arriving = []
                room = self.parameters.max_batch_size - len(self._running)
                while self._waiting and self._waiting[0].rows <= room:
                    request = self._waiting.popleft()
                    self._waiting_rows -= request.rows
                    room -= request.rows
                    arriving.append(request)
                # Rounds grow while nobody new comes (fewer calls for the running rows),
                # back to `chunk` when someone does (a short wait to join).
                self._round = self.chunk if self._waiting or arriving else \
                    min(2 * self._round, self.chunk * _GROWTH)
            try:
                if arriving and self._running:
                    self.joined_running += len(arriving)
                    self._read_prompts(arriving, draw=False)
                elif arriving:  # nothing runs: the prompts and the first round in one call
                    self._read_prompts(arriving, draw=True)
                    continue
                self._running = [row for row in self._running if not row.request.done.is_set()]
                if self._running:
                    self._round_of(self._running, None)
            except Exception as err:  # noqa: BLE001 - every waiting caller must get an answer
                logger.exception("generation round failed")
                error = err if isinstance(err, ServingError) else \
                    ServingError("INTERNAL", f"{type(err).__name__}: {err}")
                for request in arriving + [row.request for row in self._running]:
                    request.finish(error)
                self._running = []

    def _feeds(self, requests_rows, prompts, states, positions, num_chars):
        feeds = {"prompts": prompts, "states": states,
                 "position": np.asarray(positions, np.int32),
                 "num_chars": np.asarray(num_chars, np.int32)}
        for name in _SAMPLING:
            feeds[name] = np.array([r.sampling[name][i] for r, i in requests_rows],
                                   dtype=requests_rows[0][0].sampling[name].dtype)
        return feeds

    def _read_prompts(self, requests: List[_Request], draw: bool) -> None:
        """Reads the arriving rows' prompts in one call (and, with `draw`, draws their
        first round in it); on an error, request by request, so that only the request
        whose prompt the graph refused gets it."""
        live = [r for r in requests if not r.done.is_set()]
        if not live:
            return
        rows = [_Row(r, i, None) for r in live for i in range(r.rows)]
        prompts = np.concatenate([r.prompts for r in live])
        try:
            self._round_of(rows, prompts, prompts_only=not draw)
        except ServingError as err:
            if len(live) > 1:
                for request in live:
                    self._read_prompts([request], draw)
                return
            live[0].finish(err)

    def _round_of(self, rows: List[_Row], prompts, prompts_only: bool = False) -> None:
        """One call of `resume` for the rows: their prompts read first when given (new
        rows start from zeros), then, unless prompts_only, a round of characters drawn.
        The rows still to go make up the running batch after it."""
        new = prompts is not None
        chunk = 0 if prompts_only else min(self._round, min(row.remaining for row in rows))
        feeds = self._feeds([(row.request, row.index) for row in rows],
                            prompts if new else np.full(len(rows), b"", dtype=object),
                            np.zeros([len(rows), self.state_size], np.float32) if new
                            else np.stack([row.states for row in rows]),
                            [row.position for row in rows], [chunk] * len(rows))
        outputs = self._run(feeds, CancelToken())
        if chunk:
            self.rounds += 1
            self.row_steps += chunk * len(rows)
            self.largest_batch = max(self.largest_batch, len(rows))
        still = [] if not new else self._running
        for row, text, states, ended in zip(rows, outputs["completion"], outputs["states"],
                                            outputs["ended"]):
            request = row.request
            request.pieces[row.index].append(bytes(text))
            request.remaining[row.index] -= chunk
            row.states, row.position = states, row.position + chunk
            if ended or request.remaining[row.index] <= 0:
                self._row_done(request)
            else:
                still.append(row)
        self._running = still

    @staticmethod
    def _row_done(request: _Request) -> None:
        request.left -= 1
        if request.left == 0:
            request.finish()
