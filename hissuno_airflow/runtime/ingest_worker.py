"""A large run's ingest in a process of its own, fed the plugin's calls in order through a pipe (issue 15).

One Python process runs one thing at a time: in a run the plugin and its HTTP client, the ingest
(validation, hashing, the batch writes) and enrichment took turns on one core, so a 100,000-ticket
Zendesk sync took twice its fetch-only floor on two cores. Threads could not help (the interpreter lock:
``docs/performance.md``, "Night round"). Once a run has ingested ``HISSUNO_INGEST_WORKER_AFTER`` records
(default 2,000: small runs and webhooks never pay for a process), ``IngestPipe`` forks. The child keeps
the run's ``StreamIngest`` and ``_SyncServices`` exactly as they were at the fork (buffers, dedup map, queued
enrichment, counts: nothing is handed over, the fork copies it) on a store pool of its own, and applies the
calls the parent sends, in the order the plugin made them. The parent keeps the plugin, its HTTP client,
credentials, refreshes and the lease's heartbeat.

What stays as it was in one process:

- **Writes and counts.** Every write and its fence (the lease check, storing the counts with the batch)
  happen in the child, which also counts the plugin's own progress events: the parent sends them down the
  same pipe, so each batch stores the counts of the calls before it.
- **Results.** A primitive returns an ``IngestResult`` whose fields are fetched from the child when first
  read (the child keeps its latest results); a plugin that never reads them never waits.
- **Errors.** A failure in the child (a store outage, a lost lease, a bug) is raised from the plugin's next
  call, with its code, so the run ends as it would have; the child still flushes on ``close`` when the
  failure was not the store's, as ``StreamIngest.close`` did.
- **Kills.** The child dies with the parent (Linux ``PR_SET_PDEATHSIG``; elsewhere at its next read, which
  finds the pipe closed) and never flushes a partial batch then: what it committed is idempotent, the cursor
  did not move, and the retry fetches the rest. A transaction in flight rolls back.
- **Signals.** The child ignores SIGINT and SIGTERM: the parent decides (a cancel flushes through ``close``).
- **Logs.** The child's log records (a store blip's retry, a pool's warning) go to the parent, which logs
  them on its own handlers: under Airflow those write the task's log, and two processes writing one log
  channel could interleave their lines.

Fork, not spawn: the child needs the run's state, and a fresh interpreter would import the store and rebuild
the dedup map. The child touches no inherited connection (it opens its own pool) and leaves through
``os._exit``, so no finalizer of the parent's objects runs in it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ..kit.context import IngestResult, ProgressEvent
from ..kit.errors import HissunoError, StoreUnavailable
from ..kit.redaction import redact_text
from ..store.db import Store
from ..store.ingest import StreamIngest, delete_kind
from ..store.transient import is_transient, unavailable


class _RunSide(Protocol):
    """What the pipe uses of the run's services (``sync._SyncServices``; named here, not imported: the run
    imports this module)."""

    conn: Any  # ConnectionServices: ``secrets``, the live list of the run's secret values
    store: Store
    lock: threading.Lock
    counts: dict[str, int]
    high_water: Any
    on_progress: Callable[[ProgressEvent, dict[str, int]], None] | None

    def progress(self, event: ProgressEvent) -> None: ...
    def tell(self, event: ProgressEvent, snapshot: dict[str, int]) -> None: ...
    def snapshot(self) -> dict[str, int]: ...
    def advance_cursor(self, ts: Any) -> None: ...


log = logging.getLogger(__name__)

RESULTS_KEPT = 65_536
"""Results the child keeps for the parent to read (a plugin reads a result, if at all, right after its call)."""
PROGRESS_EVERY_S = 0.2
"""The child forwards the frequent progress events at most this often (sinks log or draw them; the counts are
exact with every write and at the end)."""
IDLE_PASS_MIN = 1000
"""Queued entities that make an enrichment pass while the worker waits for the plugin (``enrich.BULK_MIN``: a
first sync's passes of this size still load vectors without the index)."""
AHEAD_BYTES = 8 << 20
"""Calls the parent keeps (pickled) while the child is busy before it waits for it: a pass of enrichment or an
index build takes a second or more, and a plugin waiting for it would idle its HTTP client meanwhile (about
4,000 Zendesk tickets; 32 MB grew the run's peak memory by 60 MB at 100,000 tickets, for no faster run)."""
_CHUNK = 1 << 16
_LEN = struct.Struct("!I")
_FREQUENT = frozenset({"found", "synced", "skipped"})
"""Events forwarded at most every ``PROGRESS_EVERY_S``; the rare ones (failed, deleted) each time."""
_DROPS_BATCH = frozenset({"store_unavailable", "lease_lost"})


def _frame(msg: tuple[Any, ...]) -> bytes:
    """One message on either pipe: its length, then its pickle."""
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


def _unframe(buf: bytearray) -> tuple[Any, ...] | None:
    """Take the first whole message off ``buf``; None while it holds only part of one."""
    if len(buf) < 4:
        return None
    (size,) = _LEN.unpack_from(buf)
    if len(buf) < 4 + size:
        return None
    msg: tuple[Any, ...] = pickle.loads(buf[4 : 4 + size])  # noqa: S301 - the run's own process, a private pipe
    del buf[: 4 + size]
    return msg


class IngestWorkerLost(StoreUnavailable):
    """The ingest worker process stopped without a word (killed): the run fails retriably, cursor unmoved."""


class _PendingResult(IngestResult):
    """An ``IngestResult`` the child computes; its fields are fetched when first read."""

    def __init__(self, pipe: IngestPipe, seq: int) -> None:
        object.__setattr__(self, "_pipe", pipe)
        object.__setattr__(self, "_seq", seq)
        object.__setattr__(self, "_got", None)

    def _fields(self) -> tuple[str | None, str, str, str | None]:
        got: tuple[str | None, str, str, str | None] | None = object.__getattribute__(self, "_got")
        if got is None:
            pipe: IngestPipe = object.__getattribute__(self, "_pipe")
            got = pipe._result(object.__getattribute__(self, "_seq"))
            object.__setattr__(self, "_got", got)
        return got

    @property
    def id(self) -> str | None:
        return self._fields()[0]

    @property
    def kind(self) -> str:
        return self._fields()[1]

    @property
    def action(self) -> Any:
        return self._fields()[2]

    @property
    def error(self) -> str | None:
        return self._fields()[3]


class IngestPipe:
    """``ctx.ingest`` of a run: the run's ``StreamIngest`` until the run is large, then a worker process's."""

    def __init__(self, local: StreamIngest, after: int | None) -> None:
        self.local = local
        self.services: _RunSide  # set by the run, which makes the two together
        self.after = after if hasattr(os, "fork") else None
        self.project_id = local.project_id
        self.calls = 0
        self.pid: int | None = None
        self._out = bytearray()
        self._to: int = -1
        self._back: int = -1
        self._back_buf = bytearray()
        self._seq = 0
        self._secrets_sent = 0
        self._failure: tuple[str, str] | None = None  # (code, message) the child reported
        self._done = False
        self._reaped = False

    # -- the Ingest protocol ---------------------------------------------------------------

    def session(self, record: Any = None, /, **fields: Any) -> IngestResult:
        return self._call("session", record, fields)

    def contact(self, record: Any = None, /, **fields: Any) -> IngestResult:
        return self._call("contact", record, fields)

    def company(self, record: Any = None, /, **fields: Any) -> IngestResult:
        return self._call("company", record, fields)

    def issue(self, record: Any = None, /, **fields: Any) -> IngestResult:
        return self._call("issue", record, fields)

    def knowledge(self, record: Any = None, /, **fields: Any) -> IngestResult:
        return self._call("knowledge", record, fields)

    def delete(self, kind: str, external_id: str | int, /) -> IngestResult:
        delete_kind(kind)  # the caller's mistake: raised at its call, as in one process
        return self._call("delete", kind, {"external_id": external_id})

    def is_synced(self, external_id: str) -> bool:
        if self.pid is None:
            return self.local.is_synced(external_id)
        return bool(self._ask(("is_synced", external_id)))

    def get_synced_ids(self) -> set[str]:
        if self.pid is None:
            return self.local.get_synced_ids()
        got: set[str] = self._ask(("synced_ids",))
        return got

    def _call(self, name: str, record: Any, fields: dict[str, Any]) -> IngestResult:
        if self.pid is None:
            self.calls += 1
            if self.after is None or self.calls <= self.after:
                if name == "delete":
                    return self.local.delete(record, fields["external_id"])
                method = getattr(self.local, name)
                result: IngestResult = method(record, **fields)
                return result
            self._start()
        if self._done:
            raise RuntimeError("the run's ingest is closed")
        self._raise_failure()
        self._sync_secrets()
        self._seq += 1
        self._send(("call", self._seq, name, record, fields))
        return _PendingResult(self, self._seq)

    # -- the run's side ----------------------------------------------------------------------

    def progress(self, event: ProgressEvent) -> bool:
        """Counts live in the child once it runs: True when the event was sent there, in order."""
        if self.pid is None or self._done:
            return False
        self._send(("progress", event))
        return True

    def close(self) -> None:
        """Flush and finish enrichment (in the child, which then exits with the run's final counts)."""
        if self.pid is None:
            self.local.close()
            return
        if self._done:
            return
        # A failure the child reported before (not the store's: then the run shuts it down instead) does not
        # stop this: the child flushes what it holds, as ``StreamIngest.close`` after a failed call did.
        self._failure = None
        self._sync_secrets()
        self._send(("close",))
        try:
            self._pump(until_sent=True)
            final = None
            while final is None:
                for reply in self._drain(wait=True):  # until the reply, or the EOF of a failed close
                    final = reply[1]
        finally:
            self._done = True
            self._reap()
        if final is not None:
            counts, high = final
            with self.services.lock:
                self.services.counts.update(counts)
            if high is not None:
                self.services.advance_cursor(high)
        self._raise_failure()

    def shutdown(self) -> None:
        """Stop a child still running (the run failed on the store or ended abruptly): it drops its unwritten
        batch, as a process that dies does; what it committed stays. No-op after ``close``."""
        if self.pid is None or self._done:
            return
        self._done = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()

    # -- the pipe --------------------------------------------------------------------------

    def _start(self) -> None:
        to_r, to_w = os.pipe()
        back_r, back_w = os.pipe()
        parent = os.getpid()
        # Under the counts' lock, so no thread of the parent is halfway through a progress event.
        with self.services.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork may deadlock"
            pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(to_w)
            os.close(back_r)
            os._exit(_child(self.local, self.services, to_r, back_w, parent))
        os.close(to_r)
        os.close(back_w)
        os.set_blocking(to_w, False)
        self.pid, self._to, self._back = pid, to_w, back_r
        log.debug("ingest continues in worker process %d after %d records", pid, self.calls - 1)

    def _send(self, msg: tuple[Any, ...]) -> None:
        self._out += _frame(msg)
        if len(self._out) >= _CHUNK:
            # The child's news first (its progress, a failure to stop the plugin on): one select a chunk.
            self._drain(wait=False)
            self._pump(until_sent=False)

    def _pump(self, *, until_sent: bool) -> None:
        """Write what is buffered (all of it when ``until_sent``), reading the child's messages meanwhile
        so neither side ever waits on a full pipe."""
        while self._out:
            try:
                n = os.write(self._to, self._out)
                del self._out[:n]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                self._out.clear()
                self._drain(wait=False)
                self._lost()
            if not until_sent and len(self._out) < AHEAD_BYTES:
                return  # the child is busy (a flush, an enrichment pass): keep the rest for the next call
            readable, _, _ = select.select([self._back], [self._to], [])
            if readable:
                self._drain(wait=False)

    def _ask(self, msg: tuple[Any, ...]) -> Any:
        if self._done:
            raise RuntimeError("the run's ingest is closed")
        self._raise_failure()
        self._send(msg)
        self._pump(until_sent=True)
        while True:
            for reply in self._drain(wait=True):
                return reply[1]
            self._raise_failure()

    def _result(self, seq: int) -> tuple[str | None, str, str, str | None]:
        got: tuple[str | None, str, str, str | None] | None = self._ask(("result", seq))
        if got is None:
            msg = f"the result of ingest call {seq} is no longer kept (the worker keeps the last {RESULTS_KEPT})"
            raise RuntimeError(msg)
        return got

    def _drain(self, *, wait: bool) -> list[tuple[Any, ...]]:
        """Read the child's messages (each a length and a pickle); progress and failures are handled here,
        replies returned."""
        replies: list[tuple[Any, ...]] = []
        if not wait and not select.select([self._back], [], [], 0)[0]:
            return replies
        try:
            data = os.read(self._back, _CHUNK)
        except OSError:
            data = b""
        if not data:
            self._lost()
        self._back_buf += data
        while (msg := _unframe(self._back_buf)) is not None:
            if msg[0] == "progress":
                self._progress(msg[1], msg[2])
            elif msg[0] == "failed":
                self._failure = (msg[1], msg[2])
            elif msg[0] == "log":  # the child's record, on this process's handlers (redacted again here)
                logging.getLogger(msg[1]).log(msg[2], "%s", redact_text(msg[3], self.services.conn.secrets))
            else:
                replies.append(msg)
        return replies

    def _progress(self, event: ProgressEvent, counts: dict[str, int]) -> None:
        with self.services.lock:
            self.services.counts.update(counts)
        self.services.tell(event, counts)  # redacted again here: the parent's secrets are the live ones

    def _sync_secrets(self) -> None:
        secrets = self.services.conn.secrets
        if len(secrets) != self._secrets_sent:
            self._secrets_sent = len(secrets)
            self._send(("secrets", list(secrets)))

    def _raise_failure(self) -> None:
        if self._failure is None:
            return
        code, message = self._failure
        raise _error(code, message)

    def _lost(self) -> None:
        self._done = True
        self._reap()
        self._raise_failure()  # the reason the child gave before it went, if it gave one
        raise IngestWorkerLost("the ingest worker process stopped without finishing its batch; retry the run")

    def _reap(self) -> None:
        for fd in (self._to, self._back):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to = self._back = -1
        if self.pid is not None and not self._reaped:
            self._reaped = True
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _error(code: str, message: str) -> Exception:
    """The parent's exception for a failure the child reported, keeping its code (and so its retriability);
    any other exception keeps its name, so the run reports it as in one process (``Name: text``)."""
    if code == "plugin_error":
        name, _, text = message.partition(": ")
        named: type[Exception] = type(name, (Exception,), {"__module__": __name__})
        return named(text)
    known: dict[str, type[HissunoError]] = {}
    stack: list[type[HissunoError]] = [HissunoError]
    while stack:
        cls = stack.pop()
        known.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    cls = known.get(code, HissunoError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc


def _child(ingest: StreamIngest, services: _RunSide, rfd: int, wfd: int, parent: int) -> int:
    """The child's life; its exit status. A failure outside a call is reported before it exits."""
    out = _Out(wfd)
    try:
        _Worker(ingest, services, rfd, out, parent).serve()
    except BaseException as exc:  # the parent raises it, or reports a lost worker when this cannot be sent
        try:
            out.send(("failed", *_describe(exc, services.conn.secrets)))
        except BaseException:  # noqa: S110 - the parent sees the pipe close and reports a lost worker
            pass
        return 1
    return 0


class _Out:
    """The child's end of the pipe back to the parent: whole messages, one writer at a time (the pool's and
    enrichment's threads log through it too)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, msg: tuple[Any, ...]) -> None:
        data = memoryview(_frame(msg))
        with self.lock:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]


class _Worker:
    """The child's loop: apply the parent's calls to the run's ``StreamIngest``, in order."""

    def __init__(self, ingest: StreamIngest, services: _RunSide, rfd: int, out: _Out, parent: int) -> None:
        self.ingest, self.services = ingest, services
        self._send = out.send
        _die_with(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.rfd = rfd
        _log_to(out.send)
        self.inbox = bytearray()
        self.results: OrderedDict[int, tuple[str | None, str, str, str | None]] = OrderedDict()
        self.failure: str | None = None  # the code of the first failure; calls after it are not applied
        self._last_progress = 0.0
        self._held: tuple[ProgressEvent, dict[str, int]] | None = None
        # The inherited pool's connections are the parent's: the child opens its own and never closes those.
        store = Store(ingest.enricher.store.url, min_size=1, max_size=2)
        ingest.store = store
        ingest.enricher.store = store
        services.store = store
        services.lock = threading.Lock()
        services.on_progress = self._forward

    def serve(self) -> None:
        while True:
            msg = self._next()
            if msg is None:
                return  # the parent is gone: drop the unwritten batch
            op = msg[0]
            if op == "call":
                if self.failure is None:
                    self._apply(msg)
            elif op == "progress":
                if self.failure is None:
                    self.services.progress(msg[1])
            elif op == "secrets":
                self.ingest.secrets = msg[1]
                self.services.conn.secrets[:] = msg[1]
            elif op == "result":
                self._send(("reply", self.results.get(msg[1])))
            elif op == "is_synced":
                self._guard(lambda ext=msg[1]: self._send(("reply", self.ingest.is_synced(ext))))
            elif op == "synced_ids":
                self._guard(lambda: self._send(("reply", self.ingest.get_synced_ids())))
            elif op == "close":
                self._close()
                return

    def _next(self) -> tuple[Any, ...] | None:
        """The parent's next message (None at EOF). Waiting for it, enrich what earlier batches queued: the
        run's last pass then holds only the tail, instead of everything queued since the last full pass."""
        while True:
            if (msg := _unframe(self.inbox)) is not None:
                return msg
            if (self.failure is None and self.ingest.enricher.saved() >= IDLE_PASS_MIN
                    and not select.select([self.rfd], [], [], 0)[0]):
                self._guard(self._idle_pass)
                continue
            if self._held is not None and not select.select([self.rfd], [], [], 0)[0]:
                self._send_held()  # nothing to do: bring the caller's progress up to date
            data = os.read(self.rfd, _CHUNK)
            if not data:
                return None
            self.inbox += data

    def _idle_pass(self) -> None:
        # The batch in hand first (smaller than a full one): a pass embeds only entities that are written.
        self.ingest.flush()
        self.ingest.enricher.run(keep_deferred=True)

    def _apply(self, msg: tuple[Any, ...]) -> None:
        _, seq, name, record, fields = msg

        def call() -> None:
            if name == "delete":
                r = self.ingest.delete(record, fields["external_id"])
            else:
                r = getattr(self.ingest, name)(record, **fields)
            self.results[seq] = (r.id, r.kind, r.action, r.error)
            if len(self.results) > RESULTS_KEPT:
                self.results.popitem(last=False)

        self._guard(call)

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # reported to the parent, which raises it
            code, message = _describe(exc, self.services.conn.secrets)
            self.failure = self.failure or code
            self._send(("failed", code, message))

    def _close(self) -> None:
        if self.failure in _DROPS_BATCH:
            self._send(("failed", self.failure, "the run's store failed; its last batch was not written"))
            return
        try:
            self.ingest.close()
        except BaseException as exc:  # reported to the parent, which raises it
            self._send(("failed", *_describe(exc, self.services.conn.secrets)))
            return
        self._send_held()
        self._send(("reply", (self.services.snapshot(), self.services.high_water)))

    def _forward(self, event: ProgressEvent, counts: dict[str, int]) -> None:
        now = time.monotonic()
        if event.type not in _FREQUENT or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._held = None
            self._send(("progress", event, counts))
        else:
            self._held = (event, counts)  # sent when the worker next waits, or at the end

    def _send_held(self) -> None:
        if self._held is not None:
            event, counts = self._held
            self._held = None
            self._last_progress = time.monotonic()
            self._send(("progress", event, counts))


class _ToParent(logging.Handler):
    """The child's one log handler: each record, formatted (with its traceback), goes to the parent."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.send = send
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(("log", record.name, record.levelno, self.format(record)))
        except Exception:  # the parent is gone: nobody is left to read it
            self.handleError(record)


def _log_to(send: Callable[[tuple[Any, ...]], None]) -> None:
    """Route every log record of this (child) process to the parent: the inherited handlers are the
    parent's, which the parent keeps writing to. Each logger keeps its level; the parent's own
    configuration (its propagation, handlers and filters) applies when it logs the record again."""
    loggers = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
        lg.propagate = True
    logging.getLogger().addHandler(_ToParent(send))
    logging.raiseExceptions = False  # a record that cannot reach a dead parent is not worth a traceback


def _describe(exc: BaseException, secrets: list[str]) -> tuple[str, str]:
    """(code, message) of a failure in the child, as the parent's run would have recorded it."""
    if is_transient(exc):
        exc = unavailable(exc, "writing a batch of records")
    if isinstance(exc, HissunoError):
        return exc.code, redact_text(str(exc), secrets)
    return "plugin_error", redact_text(f"{type(exc).__name__}: {exc}", secrets)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux); the pipe's EOF covers the rest."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

