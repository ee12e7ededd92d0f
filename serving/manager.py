"""Which versions of a model are served: TF Serving's file-system source and manager, in small.

The rules are TF Serving's (FileSystemStoragePathSource, AvailabilityPreservingPolicy):
- children of the base path named by an integer are versions; other names, such as the
  Pusher's `.tmp-*` staging folders, are ignored;
- the "latest" policy serves the highest version, a specific policy one named version;
  when nothing serves yet (at start) and the highest version fails, the next lower one
  that loads is served instead (TF Serving would serve nothing until the highest loads);
- a new version is loaded completely before requests move to it, and the version it
  replaces is unloaded once the requests holding it are done;
- a version that fails to load is reported (state END with the error) while the version
  before it keeps serving; it is tried again when its files change (TF Serving retries
  on a timer instead);
- when the served version's directory is removed, the next lower version that loads
  takes over; when none is left on disk, the loaded version keeps serving from memory
  (TF Serving unloads everything then; but an emptied directory is more often a mistake
  or a vanished mount than a wish to stop serving, and a loaded model needs no files).
  A version served from memory whose directory comes back is loaded again from it;
- a base path that cannot be listed changes nothing.
"""
import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

from serving.errors import code_of, not_found
from serving.settings import DEFAULT_POLL_SECONDS

logger = logging.getLogger("textgen.serving")

# ModelVersionStatus.State names.
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"

_VERSION_NAME = re.compile(r"[0-9]{1,18}")  # at most 18 digits: always fits an int64


def find_versions(base_path: str) -> Dict[int, str]:
    """{version: directory} under base_path, ascending; OSError if it cannot be listed."""
    found: Dict[int, str] = {}
    for name in sorted(os.listdir(base_path)):
        path = os.path.join(base_path, name)
        if _VERSION_NAME.fullmatch(name) and os.path.isdir(path):
            found.setdefault(int(name), path)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


class _Loaded:
    __slots__ = ("servable", "refs", "retiring")

    def __init__(self, servable):
        self.servable = servable
        self.refs = 0
        self.retiring = False


class ModelManager:
    """Loads, serves and unloads the versions of one model found under `base_path`.

    Args:
      name: the model name requests must use.
      base_path: the directory holding <version>/ subdirectories.
      load: (version directory, version) → servable (with a close() called at unload);
        raises if the version is unusable.
      poll_seconds: interval between polls of base_path; 0 polls once, at start().
      version: serve this version only; None serves the latest.
      on_load_attempt: called with (version directory, succeeded) after each load.
    """

    def __init__(self, name: str, base_path: str, load: Callable[[str, int], Any],
                 poll_seconds: float = DEFAULT_POLL_SECONDS, version: Optional[int] = None,
                 on_load_attempt: Optional[Callable[[str, bool], None]] = None):
        self.name = name
        self.base_path = base_path
        self.poll_seconds = poll_seconds
        self.version_policy = version
        self._load = load
        self._on_load_attempt = on_load_attempt or (lambda path, ok: None)
        self._lock = threading.Lock()  # guards _loaded, _status and the reference counts
        self._poll_lock = threading.Lock()  # one poll at a time
        self._loaded: Dict[int, _Loaded] = {}
        self._status: Dict[int, VersionStatus] = {}
        self._failed: Dict[int, tuple] = {}  # version → fingerprint of the files that failed
        self._from_memory: set = set()  # loaded versions whose directory is gone
        self._last_note = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.polls = 0  # completed polls

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Polls once (loading what is there), then keeps polling in the background."""
        self.poll()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                            name=f"poll-{self.name}")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for version in list(self._loaded):
                self._retire(version)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad poll must not end polling for good
                logger.exception("polling %s failed", self.base_path)

    # --- polling ----------------------------------------------------------------------

    def poll(self) -> None:
        """One look at base_path: load what the policy asks for, retire what it dropped."""
        with self._poll_lock:
            try:
                on_disk = find_versions(self.base_path)
            except OSError as err:
                self._note(f"cannot list {self.base_path} ({err.strerror}); the served "
                           "versions stay as they are", logging.ERROR)
            else:
                self._follow_policy(on_disk)
            self.polls += 1

    def _follow_policy(self, on_disk: Dict[int, str]) -> None:
        with self._lock:
            self._from_memory.update(v for v in self._loaded if v not in on_disk)
        candidates = self._candidates(on_disk)
        target = None
        for version in candidates:
            if self._load_if_new(version, on_disk[version]):
                target = version
                break
            with self._lock:
                if self._loaded:
                    break  # a newer version that fails never replaces one that works
        with self._lock:
            if target is not None:
                for version in [v for v in self._loaded if v != target]:
                    self._retire(version)

    def _candidates(self, on_disk: Dict[int, str]) -> List[int]:
        """Versions the policy would serve, best first."""
        kept = self.served_versions()
        kept = f"; still serving version(s) {kept} from memory" if kept else ""
        if self.version_policy is None:
            if not on_disk:
                self._note(f"No versions of servable {self.name} found under base path "
                           f"{self.base_path}. Did you forget to name your leaf directory as a "
                           f"number (eg. '/1/')?{kept}", logging.WARNING)
                return []
            self._note("")
            return sorted(on_disk, reverse=True)
        if self.version_policy not in on_disk:
            self._note(f"version {self.version_policy} of servable {self.name} is not under "
                       f"base path {self.base_path} (found: {sorted(on_disk) or 'none'}){kept}",
                       logging.WARNING)
            return []
        self._note("")
        return [self.version_policy]

    def _note(self, message: str, level: int = logging.INFO) -> None:
        """Logs a condition of the base path once, not at every poll."""
        if message and message != self._last_note:
            logger.log(level, "%s", message)
        self._last_note = message

    def _load_if_new(self, version: int, path: str) -> bool:
        """True once `version` is loaded (now or before); False if it fails to load."""
        with self._lock:
            if version in self._loaded and version not in self._from_memory:
                return True
            # A version served from memory whose directory is back: its files may differ,
            # so load them; the copy in memory serves until the new one is ready.
            reloading = version in self._loaded
        fingerprint = _fingerprint(path)
        if self._failed.get(version) == fingerprint:
            return reloading
        if not reloading:
            self._set_status(VersionStatus(version, LOADING))
        logger.info("Loading servable version {name: %s version: %d} from %s",
                    self.name, version, path)
        try:
            servable = self._load(path, version)
        except Exception as err:  # noqa: BLE001 - any failure keeps the old version serving
            self._failed[version] = fingerprint
            message = getattr(err, "message", None) or str(err) or type(err).__name__
            if not reloading:
                self._set_status(VersionStatus(version, END, code_of(err), message))
            self._on_load_attempt(path, False)
            with self._lock:
                serving = sorted(self._loaded)
            logger.error("Loading servable version {name: %s version: %d} failed: %s: %s; "
                         "still serving %s", self.name, version, code_of(err), message,
                         f"version(s) {serving}" if serving else "nothing")
            return reloading
        self._failed.pop(version, None)
        self._on_load_attempt(path, True)
        with self._lock:
            previous = self._loaded.get(version)
            self._loaded[version] = _Loaded(servable)
            self._status[version] = VersionStatus(version, AVAILABLE)
            self._from_memory.discard(version)
            if previous is not None:  # the copy from memory: unloads after its requests
                previous.retiring = True
                if previous.refs == 0:
                    self._unload(version, previous)
        logger.info("Successfully loaded servable version {name: %s version: %d}",
                    self.name, version)
        return True

    def _set_status(self, status: VersionStatus) -> None:
        with self._lock:
            self._status[status.version] = status

    def _retire(self, version: int) -> None:
        """Stops handing out `version`; it unloads when its last request is done. Holds _lock."""
        entry = self._loaded.pop(version)
        self._from_memory.discard(version)
        entry.retiring = True
        self._status[version] = VersionStatus(version, UNLOADING)
        if entry.refs == 0:
            self._unload(version, entry)

    def _unload(self, version: int, entry: _Loaded) -> None:
        entry.servable.close()  # its own threads (batching) end
        entry.servable = None  # the last reference: TensorFlow frees the model
        if version not in self._loaded:  # unless the version came back meanwhile (a rollback)
            self._status[version] = VersionStatus(version, END)
        logger.info("Unloaded servable version {name: %s version: %d}", self.name, version)

    # --- requests ---------------------------------------------------------------------

    @contextlib.contextmanager
    def acquire(self, name: str, version: Optional[int] = None) -> Iterator[Any]:
        """The servable for a request (the latest when version is None), held until exit."""
        with self._lock:
            if name != self.name or not self._loaded or (
                    version is not None and version not in self._loaded):
                wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {wanted}")
            chosen = max(self._loaded) if version is None else version
            entry = self._loaded[chosen]
            entry.refs += 1
        try:
            yield entry.servable
        finally:
            with self._lock:
                entry.refs -= 1
                if entry.retiring and entry.refs == 0:
                    self._unload(chosen, entry)

    def served_versions(self) -> List[int]:
        with self._lock:
            return sorted(self._loaded)

    def status(self, name: str, version: Optional[int] = None) -> List[VersionStatus]:
        """Versions known to the manager, newest first, in TF Serving's GetModelStatus way."""
        with self._lock:
            if version is not None:
                if name != self.name or version not in self._status:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [self._status[version]]
            if name != self.name or not self._status:
                raise not_found(f"Could not find any versions of model {name}")
            return [self._status[v] for v in sorted(self._status, reverse=True)]


def _fingerprint(path: str) -> tuple:
    """Names, sizes and modification times of a version's files: tells a changed copy."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)
