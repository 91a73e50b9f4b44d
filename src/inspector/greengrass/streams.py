"""S3 uploads through StreamManager's S3 export: one data stream, one status stream, one thread.

    uploader = S3Uploader(stream_manager_client, max_retries=3).start()
    uploader.submit(path, bucket, key, metadata, on_done)   # on_done(ok, reason)

Both streams are created once (listed first; never deleted or recreated while they exist, which
would cancel pending exports), file-persisted so they survive a StreamManager restart. Each image
is one ``S3ExportTaskDefinition`` appended to the data stream; the status stream is read from
where this process started, and a status is matched to its task by the data stream's sequence
number. Success -> ``on_done(True, "")``; Failure or Canceled -> appended again after an
exponential backoff (capped at ``retry_max_s``), for as long as the task's retry window lasts
(``retry_window_s`` from its creation, or its own wall-clock ``deadline``: the upload sink sets
that from the result's time, so the window survives a restart) and at least ``max_retries``
times; only then ``on_done(False, message)``. ``retried`` and ``failed`` count retries and final
failures.

StreamManager down (connection refused, timeout): the client is dropped, the tasks wait and are
appended after a reconnect (backoff capped at ``reconnect_max_s``). If the streams had to be
created again after a reconnect (a StreamManager that lost them), tasks that were in flight are
appended again; so are tasks with no final status within ``status_timeout_s``. The same key is
written again in that case (the object is the same file).

Best-effort uploads (review images: ``inspector.sinks.review``) use an uploader of their own
streams with ``accept_within_s`` > 0: a task StreamManager has not accepted (appended) within
that long after ``submit`` (down, never deployed) is given up with ``on_done(False, ...)``
instead of waiting for a reconnect, and ``log_failures=False`` leaves the reporting to the owner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from inspector.conventions import backoff
from inspector.errors import UploadError

logger = logging.getLogger(__name__)

DATA_STREAM = "InspectorDefectImages"
STATUS_STREAM = "InspectorDefectImagesStatus"
EXPORT_ID = "InspectorS3Export"
RECONNECT_BASE_S = 0.2  # the first wait after StreamManager could not be reached

# () -> a connected StreamManagerClient; raises when StreamManager is not reachable
ClientFactory = Callable[[], Any]


@dataclass
class UploadTask:
    path: Path  # absolute; the file must stay until on_done
    bucket: str
    key: str
    metadata: dict[str, str]
    on_done: Callable[[bool, str], None]  # (uploaded, reason when not)
    deadline: float | None = None  # time.time() after which a failure is final (None: window)
    created: float = field(default_factory=time.time)
    attempts: int = 0  # failed exports so far
    not_before: float = 0.0  # time.monotonic() before which it is not appended
    sequence: int | None = None  # in the data stream, once appended (the current attempt)
    sequences: list[int] = field(default_factory=list)  # every append, superseded ones included
    appended_at: float = 0.0
    history: list[str] = field(default_factory=list)
    submitted: float = field(default_factory=time.monotonic)  # for ``accept_within_s``


class S3Uploader:
    """Owns the StreamManager client; every call happens on its own thread."""

    def __init__(
        self,
        connect: ClientFactory,
        *,
        max_retries: int = 3,
        retry_window_s: float = 0.0,
        retry_base_s: float = 0.5,
        retry_max_s: float = 300.0,
        reconnect_max_s: float = 5.0,
        status_timeout_s: float = 300.0,
        data_stream: str = DATA_STREAM,
        status_stream: str = STATUS_STREAM,
        accept_within_s: float = 0.0,
        log_failures: bool = True,
    ) -> None:
        self._connect = connect
        # > 0: best effort (review uploads): a task StreamManager has not accepted within this
        # long (down, or never deployed) is given up, on_done(False, ...), not kept forever
        self.accept_within_s = accept_within_s
        self.log_failures = log_failures  # False: the owner reports failures (rate-limited)
        self.max_retries = max_retries
        self.retry_window_s = retry_window_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.reconnect_max_s = reconnect_max_s
        self.status_timeout_s = status_timeout_s
        self.data_stream = data_stream
        self.status_stream = status_stream
        self._lock = threading.Lock()
        self._queue: list[UploadTask] = []  # not appended yet (new, retrying, or re-issued)
        # data stream sequence number -> task; a task re-issued for want of a status keeps its
        # earlier sequence numbers here, so whichever export succeeds first completes it
        self._inflight: dict[int, UploadTask] = {}
        self._last_status = time.monotonic()  # when a status of ours last arrived
        self._client: Any = None
        self._cursor: int | None = None  # next status stream sequence number to read
        self._failures = 0  # consecutive connection failures
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.uploaded = 0
        self.failed = 0
        self.retried = 0
        self.connected = False

    # --- public ------------------------------------------------------------------------------

    def start(self) -> S3Uploader:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="s3-uploader", daemon=True)
            self._thread.start()
        return self

    def submit(self, path: Path, bucket: str, key: str, metadata: dict[str, str],
               on_done: Callable[[bool, str], None], *, deadline: float | None = None
               ) -> UploadTask:
        """Queue one upload of ``path`` (absolute; it must stay until ``on_done(ok, reason)``);
        a failure is final after ``deadline`` (time.time()), else after ``retry_window_s``."""
        task = UploadTask(path, bucket, key, metadata, on_done, deadline=deadline)
        with self._lock:
            self._queue.append(task)
        self._wake.set()
        return task

    def pending(self) -> int:
        with self._lock:
            return len({id(t) for t in [*self._queue, *self._inflight.values()]})

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; unfinished uploads stay held on disk for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._drop_client()
        left = self.pending()
        if left:
            logger.info("%d upload(s) unfinished; the images stay held for the next start", left)

    # --- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._expire_unaccepted()
                if self._client is None and not self._open():
                    continue
                self._append_due()
                if not self._read_statuses():
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
                self._reissue_stale()
            except _Disconnected as exc:
                self._failures += 1
                logger.warning("StreamManager unavailable (%s); uploads wait", exc)
                self._drop_client()
                self._pause(backoff(self._failures, RECONNECT_BASE_S, self.reconnect_max_s))
            except Exception:  # unknown: start again from a fresh client; tasks are kept
                logger.exception("uploader: unexpected error")
                self._drop_client()
                self._pause(1.0)

    def _expire_unaccepted(self) -> None:
        """``accept_within_s`` > 0: give up the tasks StreamManager has not accepted within it."""
        limit = self.accept_within_s
        if limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            expired = [t for t in self._queue if now - t.submitted >= limit]
        for task in expired:
            self._finish(task, False, "StreamManager did not accept it within "
                         f"{self.accept_within_s:g} s (down or not deployed)")

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _idle_wait(self) -> float:
        with self._lock:
            if not self._queue:
                return 1.0
            soonest = min(t.not_before for t in self._queue)
        return max(0.01, min(1.0, soonest - time.monotonic()))

    def _open(self) -> bool:
        with self._lock:
            idle = not self._queue and not self._inflight
        if idle:  # nothing to upload: connect only once there is
            self._wake.wait(1.0)
            self._wake.clear()
            return False
        try:
            client = self._connect()
        except Exception as exc:
            self._failures += 1
            wait = backoff(self._failures, RECONNECT_BASE_S, self.reconnect_max_s)
            log = logger.warning if self._failures in (1, 10) or self._failures % 100 == 0 \
                else logger.debug
            log("cannot reach StreamManager (%r); retrying in %.1f s", exc, wait)
            self._pause(wait)
            return False
        self._client = client
        try:
            created = self._ensure_streams()
        except _Disconnected as exc:
            logger.warning("StreamManager: cannot set up the streams: %s", exc)
            self._drop_client()
            self._failures += 1
            self._pause(backoff(self._failures, RECONNECT_BASE_S, self.reconnect_max_s))
            return False
        self._failures = 0
        self.connected = True
        logger.info("StreamManager connected (streams %s, %s%s)", self.data_stream,
                    self.status_stream, "; created" if created else "")
        if created and self._cursor is not None:
            self._requeue_inflight("the streams were created again")
        if self._cursor is None or created:
            self._cursor = None  # stays unknown (asked again next time) if this call fails
            self._cursor = self._newest_status() + 1
        return True

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            try:
                client.close()
            except Exception:
                logger.debug("closing the StreamManager client failed", exc_info=True)

    def _sm(self, what: str, fn: Callable[[], Any]) -> Any:
        """One StreamManager call; connection problems become _Disconnected."""
        from stream_manager.exceptions import (
            ConnectFailedException,
            NotEnoughMessagesException,
            ServerTimeoutException,
            StreamManagerException,
            UnknownFailureException,
        )

        try:
            return fn()
        except NotEnoughMessagesException:
            raise
        except (ConnectionError, TimeoutError, asyncio.TimeoutError,
                concurrent.futures.TimeoutError, asyncio.IncompleteReadError, OSError,
                ConnectFailedException, ServerTimeoutException, UnknownFailureException) as exc:
            # (on Python 3.10 the asyncio and futures timeouts are not TimeoutError)
            raise _Disconnected(f"{what}: {exc!r}") from exc
        except StreamManagerException as exc:
            if "closed" in str(exc).lower():  # "Client is closed. Create a new client first."
                raise _Disconnected(f"{what}: {exc}") from exc
            raise UploadError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _ensure_streams(self) -> bool:
        """Create whichever stream is missing; True when one was created."""
        from stream_manager import (
            ExportDefinition,
            MessageStreamDefinition,
            Persistence,
            S3ExportTaskExecutorConfig,
            StatusConfig,
            StatusLevel,
            StrategyOnFull,
        )
        from stream_manager.exceptions import InvalidRequestException

        existing = set(self._sm("ListStreams", self._client.list_streams) or [])
        definitions = []
        if self.status_stream not in existing:
            definitions.append(MessageStreamDefinition(
                name=self.status_stream, max_size=16 << 20, stream_segment_size=1 << 20,
                strategy_on_full=StrategyOnFull.OverwriteOldestData,
                persistence=Persistence.File, flush_on_write=False,
            ))
        if self.data_stream not in existing:
            definitions.append(MessageStreamDefinition(
                name=self.data_stream, max_size=64 << 20, stream_segment_size=4 << 20,
                strategy_on_full=StrategyOnFull.OverwriteOldestData,
                persistence=Persistence.File, flush_on_write=True,
                export_definition=ExportDefinition(s3_task_executor=[S3ExportTaskExecutorConfig(
                    identifier=EXPORT_ID,
                    status_config=StatusConfig(status_level=StatusLevel.INFO,
                                               status_stream_name=self.status_stream),
                )]),
            ))
        for definition in definitions:
            try:
                self._sm("CreateMessageStream",
                         functools.partial(self._client.create_message_stream, definition))
                logger.info("StreamManager: created stream %s", definition.name)
            except UploadError as exc:
                if not isinstance(exc.__cause__, InvalidRequestException):
                    raise _Disconnected(str(exc)) from exc
                logger.info("StreamManager: stream %s exists already", definition.name)
        return bool(definitions)

    def _newest_status(self) -> int:
        info = self._sm("DescribeMessageStream",
                        lambda: self._client.describe_message_stream(self.status_stream))
        newest = getattr(getattr(info, "storage_status", None), "newest_sequence_number", None)
        return int(newest) if newest is not None else -1

    def _append_due(self) -> None:
        from stream_manager import S3ExportTaskDefinition, Util
        from stream_manager.exceptions import ValidationException

        now = time.monotonic()
        with self._lock:
            due = [t for t in self._queue if t.not_before <= now]
        for task in due:
            if self._stop.is_set():
                return
            if not task.path.exists():
                self._finish(task, False, f"{task.path} vanished before its upload")
                continue
            definition = S3ExportTaskDefinition(
                input_url="file://" + quote(str(task.path.resolve())),
                bucket=task.bucket, key=task.key, user_metadata=dict(task.metadata),
            )
            try:
                payload = Util.validate_and_serialize_to_json_bytes(definition)
            except ValidationException as exc:
                self._finish(task, False, f"invalid upload request: {exc}")
                continue
            try:
                sequence = self._sm("AppendMessage", functools.partial(
                    self._client.append_message, self.data_stream, payload))
            except UploadError as exc:
                from stream_manager.exceptions import ResourceNotFoundException

                if isinstance(exc.__cause__, ResourceNotFoundException):
                    raise _Disconnected("the data stream is gone") from exc
                logger.error("%s: StreamManager refused the upload: %s", task.path.name, exc)
                self._after_failure(task, str(exc))
                continue
            with self._lock:
                if task in self._queue:
                    self._queue.remove(task)
                task.sequence = int(sequence)
                task.sequences.append(task.sequence)
                task.appended_at = time.monotonic()
                self._inflight[task.sequence] = task
            logger.debug("%s: upload queued as #%d -> s3://%s/%s", task.path.name, sequence,
                         task.bucket, task.key)

    def _read_statuses(self) -> bool:
        """Read and apply new status messages; False when there was nothing to wait for."""
        from stream_manager import ReadMessagesOptions, StatusMessage, Util
        from stream_manager.exceptions import NotEnoughMessagesException

        with self._lock:
            if not self._inflight:
                return False
        assert self._cursor is not None
        options = ReadMessagesOptions(desired_start_sequence_number=self._cursor,
                                      min_message_count=1, max_message_count=100,
                                      read_timeout_millis=300)
        try:
            messages = self._sm("ReadMessages", lambda: self._client.read_messages(
                self.status_stream, options))
        except NotEnoughMessagesException:
            return True
        except UploadError as exc:
            from stream_manager.exceptions import ResourceNotFoundException

            if isinstance(exc.__cause__, ResourceNotFoundException):
                raise _Disconnected("the status stream is gone") from exc
            raise
        for message in messages or []:
            self._cursor = max(self._cursor, int(message.sequence_number) + 1)
            try:
                status = Util.deserialize_json_bytes_to_obj(message.payload, StatusMessage)
            except Exception:
                logger.warning("status stream: unreadable message #%d", message.sequence_number)
                continue
            self._on_status(status)
        return True

    def _on_status(self, status: Any) -> None:
        from stream_manager import Status

        context = status.status_context
        if context is None or context.stream_name != self.data_stream:
            return
        sequence = context.sequence_number
        with self._lock:
            task = self._inflight.get(sequence)
            if task is not None:
                self._last_status = time.monotonic()
        if task is None:
            return  # an earlier run's task (re-issued since) or another writer's
        if status.status == Status.Success:
            self._finish(task, True, "")
        elif status.status in (Status.Failure, Status.Canceled):
            with self._lock:
                self._inflight.pop(sequence, None)
                current = task.sequence == sequence
                if current:
                    task.sequence = None
            if current:  # a superseded attempt failing changes nothing
                self._after_failure(task, f"{status.status.name}: {status.message or ''}".strip())

    def _after_failure(self, task: UploadTask, reason: str) -> None:
        task.attempts += 1
        task.history.append(reason)
        deadline = task.deadline if task.deadline is not None \
            else task.created + self.retry_window_s
        left = deadline - time.time()
        if task.attempts > self.max_retries and left <= 0:
            with self._lock:
                if task in self._queue:
                    self._queue.remove(task)
            self._finish(task, False, f"upload failed {task.attempts} time(s); last: {reason}")
            return
        wait = backoff(task.attempts, self.retry_base_s, self.retry_max_s)
        if task.attempts > self.max_retries:
            wait = min(wait, max(0.05, left))  # one last try when the window closes
        self.retried += 1
        logger.warning("%s: upload %s; retry %d in %.1f s (retrying for %s more)",
                       task.path.name, reason, task.attempts, wait, _duration(max(0.0, left)))
        task.not_before = time.monotonic() + wait
        with self._lock:
            if task not in self._queue:
                self._queue.append(task)

    def _finish(self, task: UploadTask, ok: bool, reason: str) -> None:
        with self._lock:
            for sequence in task.sequences:
                if self._inflight.get(sequence) is task:
                    del self._inflight[sequence]
            task.sequence = None
            if task in self._queue:
                self._queue.remove(task)
        if ok:
            self.uploaded += 1
            logger.info("%s: uploaded to s3://%s/%s", task.path.name, task.bucket, task.key)
        else:
            self.failed += 1
            log = logger.error if self.log_failures else logger.debug
            log("%s: upload to s3://%s/%s abandoned: %s", task.path.name, task.bucket, task.key,
                reason)
        try:
            task.on_done(ok, reason)
        except Exception:
            logger.exception("%s: upload callback failed", task.path.name)

    def _requeue_inflight(self, why: str) -> None:
        with self._lock:
            tasks = list({id(t): t for t in self._inflight.values()}.values())
            self._inflight.clear()  # those sequence numbers died with the streams
            for task in tasks:
                task.sequence = None
                task.sequences.clear()
                task.not_before = 0.0
                if task not in self._queue:
                    self._queue.append(task)
        if tasks:
            logger.warning("%d upload(s) appended again: %s", len(tasks), why)

    def _reissue_stale(self) -> None:
        """Tasks with no final status for ``status_timeout_s`` while no status at all came in
        meanwhile (a stalled export, not a long queue) are appended again."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_status <= self.status_timeout_s:
                return
            stale = [t for s, t in self._inflight.items()
                     if t.sequence == s and now - t.appended_at > self.status_timeout_s]
            for task in stale:
                task.sequence = None  # its earlier sequence stays: a late Success still counts
                task.not_before = 0.0
                self._queue.append(task)
            if stale:
                self._last_status = now  # give the new attempts a full timeout
        if stale:
            logger.warning("%d upload(s) without a status for %.0f s; appended again",
                           len(stale), self.status_timeout_s)


class _Disconnected(Exception):
    """Internal: the StreamManager connection is unusable."""


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
