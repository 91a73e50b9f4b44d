"""The Greengrass results sink: every result to AWS IoT Core (QoS 1), local pub/sub, or both.

``send`` writes the result to the on-disk spool (one entry per destination) and wakes the
publisher thread, so a slow or absent nucleus never holds up the pipeline. The publisher sends the
spool oldest first, each message with a timeout, retried with exponential backoff (tenacity),
and removes it once the nucleus acknowledged it. What is left (nucleus down, component stopped)
is sent after the reconnect or the next start.

Express publish: when nothing older is waiting in the spool, ``send`` hands the message to the
publisher thread from memory BEFORE it writes the spool entry, so the publish runs while the
spool's fsyncs do (they took ~7.5 ms of every single image's latency when the publish waited for
them). The acknowledgement then removes the spool entry. A failed express publish (timeout,
nucleus down or refusing) is left to the spool path: the entry is published from there, in order,
with the retries and the dead-letter rule above; the express messages queued behind it go the same
way, so a message never overtakes an older one that is not yet acknowledged.

Custody (what ``DeliveryDesk`` relies on): ``send`` returns only once every message is durable:
fsynced in the spool, or, when the spool cannot take it (full, disk error), acknowledged by the
nucleus; otherwise it raises SinkError and the pipeline keeps the image. A kill -9 at any point
loses nothing: before ``send`` returned the image is not done and its journal entry is open, so it
is inspected again and that result says ``repeat: true`` (the express publish may have reached the
nucleus first); after, the entry is in the spool until it was acknowledged, and one acknowledged
but not yet unspooled is sent once more at the next start (the same payload, as after a timeout).
Every spooled message carries its image's name, so every log line about it names the image.

A publish the nucleus refuses for good (``UnauthorizedError``: the topic is not in the
component's accessControl; or an invalid request) is neither retried forever nor dropped: it is
appended to ``<spool>/dead-letter.jsonl`` (image, topic, error, time, payload), logged as an
ERROR naming the image and the file, and counted (``dead_letters``).

Delivery is at least once: a publish that timed out is "unknown" and is sent again, so the cloud
may see a result twice; ``device`` + ``image.name`` + ``image.sha256`` + ``time`` identify it
for de-duplication.

Payloads stay under ``MAX_PAYLOAD_BYTES`` (AWS IoT Core's 128 KB message limit): the detections
with the lowest confidence are dropped, ``detections_truncated`` is set and ``detections_total``
holds the count before truncation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tenacity import (
    Retrying,
    retry_if_not_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from inspector.conventions import utc_now
from inspector.errors import IpcRejected, SinkError
from inspector.result import to_json
from inspector.settings import topic_problems  # the settings model's rules, the only ones
from inspector.sinks.base import Delivery, Sink

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 128 * 1024


class Publisher(Protocol):
    """What the sink needs of ``inspector.greengrass.ipc.IpcClient``."""

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None: ...

    def publish_to_topic(self, topic: str, message: dict[str, Any], *,
                         attempts: int | None = None) -> None: ...


class SpoolLike(Protocol):
    def put(self, record: dict[str, Any]) -> Any: ...
    def pending(self, limit: int | None = None) -> list[Any]: ...
    def remove(self, entry_id: int) -> None: ...
    def dead_letter(self, entry: Any, *, error: str, when: str) -> Any: ...
    def __len__(self) -> int: ...


def render_topic(template: str, thing_name: str) -> str:
    """``template`` with ``{thingName}`` filled in; raises ValueError for other placeholders."""
    problems = topic_problems(template)
    if problems:
        raise ValueError(problems[0])
    return template.replace("{thingName}", thing_name)


def fit_payload(result: dict[str, Any], limit: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, bool]:
    """The JSON bytes of ``result``, detections truncated to fit ``limit``; (bytes, truncated)."""
    data = to_json(result).encode("utf-8")
    if len(data) <= limit:
        return data, False
    detections = sorted(result.get("detections") or [],
                        key=lambda d: float(d.get("confidence", 0.0)), reverse=True)
    total = int(result.get("detections_total", len(detections)))

    def build(n: int) -> bytes:
        cut = {**result, "detections": detections[:n], "detections_truncated": True,
               "detections_total": total}
        return to_json(cut).encode("utf-8")

    lo, hi = 0, len(detections)  # the largest n that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(build(mid)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    data = build(lo)
    if len(data) > limit:
        raise SinkError(f"result is {len(data)} bytes even without detections (limit {limit})")
    return data, True


class MqttSink(Sink):
    """Spool, then publish in order; see the module docstring."""

    name = "mqtt"

    def __init__(
        self,
        ipc: Publisher,
        spool: SpoolLike,
        *,
        thing_name: str,
        target: str = "iotcore",
        iot_topic: str = "inspector/results",
        pubsub_topic: str = "inspector/results",
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        express_wait_s: float = 15.0,
    ) -> None:
        self.ipc = ipc
        # how long ``send`` waits for an express publish to settle when the spool refused the
        # message (longer than the IPC client's timeout, which ends every publish attempt)
        self.express_wait_s = express_wait_s
        self.spool = spool
        self.thing_name = thing_name
        self.target = target
        self.iot_topic = render_topic(iot_topic, thing_name)
        self.pubsub_topic = render_topic(pubsub_topic, thing_name)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.published = 0
        self.truncated = 0
        self.rejected = 0  # refused by the nucleus, dead-lettered
        self.dead_letters = 0
        self.express = 0  # messages published from memory, while being spooled
        self._wake = threading.Event()  # new messages in the spool
        self._retry_now = threading.Event()  # reconnected: cut the backoff short
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # express publishes (see the module docstring): queued for the publisher thread, and the
        # spool ids of those not yet settled, which the spool path leaves alone meanwhile.
        # ``_lock`` guards those (never held across I/O: the express publish must not wait for
        # a spool write); ``_listing`` makes "spool.put + registering the id" one step for the
        # publisher's listing of the spool.
        self._lock = threading.Lock()
        self._listing = threading.Lock()
        self._express: deque[_Express] = deque()
        self._express_ids: set[int] = set()

    # --- the Sink seam -----------------------------------------------------------------------

    def start(self) -> MqttSink:
        if self._thread is None:
            self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publisher",
                                            daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Try the spool now (after a reconnect)."""
        self._retry_now.set()
        self._wake.set()

    def send(self, delivery: Delivery) -> None:
        image = str(delivery.result["image"]["name"])
        payload, truncated = fit_payload(delivery.result)
        if truncated:
            self.truncated += 1
            logger.warning("%s: result truncated to fit %d bytes", image, MAX_PAYLOAD_BYTES)
        text = payload.decode("utf-8")
        done = delivery.progress
        for target, topic in self._destinations():
            key = f"{self.name}:{target}"
            if key in done:
                continue  # made durable by an earlier attempt for this image
            record = {"target": target, "topic": topic, "payload": text, "image": image}
            express = self._start_express(record)
            try:
                with self._listing:
                    entry = self.spool.put(record)
                    state = ""  # the express publish's state when its entry was written
                    if express is not None:
                        with self._lock:
                            express.entry_id, state = entry.id, express.state
                            if state == "sending":  # the publisher settles the entry
                                self._express_ids.add(entry.id)
                    # settled before it was spooled: done here, before the listing can see it
                    if state == "acked":
                        self.spool.remove(entry.id)
                    elif state == "refused" and express is not None and express.refusal:
                        self._dead_letter(entry, image, express.refusal)  # refused for good
            except Exception:
                # the spool cannot take it: durable all the same if the nucleus acknowledged it
                if express is None or not self._acked(express, image):
                    raise
            done.add(key)
        self._wake.set()

    def _start_express(self, record: dict[str, Any]) -> _Express | None:
        """Hand ``record`` to the publisher now, unless older messages wait in the spool (they
        go first: then the spool path sends this one after them). ``send`` runs on one thread
        (the delivery thread), so every earlier message is spooled and registered by now."""
        if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
            return None
        spooled = len(self.spool)  # first: the publisher drops an id before its entry
        with self._lock:
            if spooled != len(self._express_ids):
                return None
            express = _Express(record)
            self._express.append(express)
        self._wake.set()
        return express

    def _acked(self, express: _Express, image: str) -> bool:
        """After the spool refused the message: wait for its express publish to settle."""
        express.settled.wait(self.express_wait_s)
        if express.state != "acked":
            return False
        logger.warning("%s: result not spooled, but the nucleus acknowledged it", image)
        return True

    def preflight(self) -> None:
        folder = getattr(self.spool, "folder", None)
        if folder is not None:
            _check_writable_dir(Path(folder))

    def status(self) -> dict[str, int]:
        return {"spooled": len(self.spool), "published": self.published,
                "dead_letters": self.dead_letters}

    def reconfigure(self, settings: Any) -> None:
        self.target = str(settings.PublishTarget)
        self.iot_topic = render_topic(settings.PublishResultsOnTopic, self.thing_name)
        self.pubsub_topic = render_topic(settings.PubSubTopic, self.thing_name)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what the spool holds for up to ``timeout_s``; the rest waits on disk."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while len(self.spool) and time.monotonic() < deadline and self._thread is not None \
                and self._thread.is_alive():
            time.sleep(0.05)
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        left = len(self.spool)
        if left:
            names = sorted({_image_of(e.record) for e in self.spool.pending(limit=20)})
            logger.warning("%d result message(s) not yet acknowledged (%s%s); kept in the spool "
                           "for the next start", left, ", ".join(names),
                           ", ..." if left > 20 else "")

    def pending(self) -> int:
        return len(self.spool)

    def _destinations(self) -> list[tuple[str, str]]:
        out = []
        if self.target in ("iotcore", "both"):
            out.append(("iotcore", self.iot_topic))
        if self.target in ("pubsub", "both"):
            out.append(("pubsub", self.pubsub_topic))
        return out

    # --- the publisher thread ----------------------------------------------------------------

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a message added meanwhile sets it again
            if self._publish_express():
                continue
            with self._listing:  # not an express message being spooled or in flight
                entries = self.spool.pending(limit=64)
                with self._lock:
                    entries = [e for e in entries if e.id not in self._express_ids]
            if not entries:
                self._wake.wait(1.0)
                continue
            for entry in entries:
                if self._stop.is_set() or not self._publish_with_retry(entry):
                    break

    def _publish_express(self) -> bool:
        """Publish the oldest express message once (False: none queued). Acknowledged: its
        spool entry goes (now, or in ``send`` once written). Failed: it and the express
        messages behind it are left to the spool path, which keeps their order."""
        with self._lock:
            if not self._express:
                return False
            express = self._express.popleft()
        try:
            self._publish_once(express.record)
        except Exception as exc:
            refused = isinstance(exc, (IpcRejected, _BadRecord))
            if not refused:
                logger.info("%s: express publish failed (%s); sending it from the spool",
                            _image_of(express.record), exc)
            with self._lock:
                behind = list(self._express)
                self._express.clear()
                for item in behind:
                    self._settle_express(item, "failed")
                express.refusal = exc if refused else None
                entry_id = self._settle_express(express, "refused" if refused else "failed")
            if refused and entry_id is not None:  # else ``send`` dead-letters it once spooled
                self._dead_letter(_Entry(entry_id, express.record),
                                  _image_of(express.record), exc)
            return True
        self.express += 1
        with self._lock:
            entry_id = self._settle_express(express, "acked")
        if entry_id is not None:
            self.spool.remove(entry_id)
        return True

    def _settle_express(self, express: _Express, state: str) -> int | None:
        """(Under ``_lock``.) The spool id it had, if it was spooled already."""
        express.state = state
        if express.entry_id is not None:
            self._express_ids.discard(express.entry_id)
        express.settled.set()
        return express.entry_id

    def _publish_with_retry(self, entry: Any) -> bool:
        """Publish one spooled message until acknowledged (True) or stopping (False).

        Only a refusal by the nucleus (or a malformed spool record) drops a message; any other
        error, expected or not, keeps it and is retried with backoff.
        """

        retrying = Retrying(
            stop=stop_when_event_set(self._stop),
            wait=wait_exponential(multiplier=self.backoff_s, min=self.backoff_s,
                                  max=self.backoff_max_s),
            retry=retry_if_not_exception_type((IpcRejected, _BadRecord)),
            sleep=self._sleep, reraise=True,
            before_sleep=self._log_retry,
        )
        image = _image_of(entry.record)
        try:
            retrying(self._publish_once, entry.record)
        except (IpcRejected, _BadRecord) as exc:
            return self._dead_letter(entry, image, exc)
        except Exception:
            return False  # stopping; the message stays in the spool
        self.spool.remove(entry.id)
        return True

    def _dead_letter(self, entry: Any, image: str, exc: Exception) -> bool:

        error = str(exc)
        try:
            where = self.spool.dead_letter(entry, error=error, when=utc_now())
        except OSError as write_error:
            logger.error("%s: the nucleus refused its result (%s) and it cannot be written to "
                         "the dead-letter file: %s; kept in the spool", image, error, write_error)
            self._stop.wait(self.backoff_max_s)
            return False
        with self._lock:  # the publisher and (an express refusal) the delivery thread
            self.rejected += 1
            self.dead_letters += 1
        topic = entry.record.get("topic", "?") if isinstance(entry.record, dict) else "?"
        logger.error("%s: result NOT published to %s: %s; kept in %s", image, topic, error,
                     where)
        return True

    @staticmethod
    def _log_retry(state: Any) -> None:
        error = state.outcome.exception() if state.outcome else None
        known = type(error).__module__.startswith("inspector.")
        image = _image_of(state.args[0]) if state.args else "<unknown image>"
        logger.warning("%s: publish failed, will retry: %s", image,
                       error if known else repr(error), exc_info=None if known else error)

    def _publish_once(self, record: dict[str, Any]) -> None:
        try:
            target, topic, payload = record["target"], record["topic"], record["payload"]
            message: dict[str, Any] = json.loads(payload) if target == "pubsub" else {}
        except (KeyError, TypeError, ValueError) as exc:
            raise _BadRecord(f"malformed: {exc!r}") from exc
        if target == "pubsub":
            self.ipc.publish_to_topic(topic, message, attempts=1)
        else:
            self.ipc.publish_to_iot_core(topic, payload.encode("utf-8"), qos="1", attempts=1)
        self.published += 1

    def _sleep(self, seconds: float) -> None:
        # a reconnect or a stop cuts the backoff short
        self._retry_now.wait(seconds)
        self._retry_now.clear()


def _image_of(record: Any) -> str:
    if isinstance(record, dict):
        if record.get("image"):
            return str(record["image"])
        try:  # spooled by an older version: the name is in the payload
            return str(json.loads(record["payload"])["image"]["name"])
        except (KeyError, TypeError, ValueError):
            pass
    return "<unknown image>"


def _check_writable_dir(folder: Path) -> None:
    """SinkError naming ``folder`` when it cannot be created or written."""
    import os
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SinkError(f"{folder}: not writable: {reason}") from exc
    if not os.access(folder, os.W_OK):
        raise SinkError(f"{folder}: not writable")


@dataclass(frozen=True)
class _Entry:  # a spool entry for ``SpoolLike.dead_letter`` (sinks never import greengrass/)
    id: int
    record: dict[str, Any]


@dataclass(eq=False)
class _Express:
    """One message published from memory while ``send`` spools it."""

    record: dict[str, Any]
    state: str = "sending"  # "sending" | "acked" | "failed" | "refused"
    entry_id: int | None = None  # its spool entry, once written
    refusal: Exception | None = None  # the nucleus refused it for good: dead-lettered
    settled: threading.Event = field(default_factory=threading.Event)


class _BadRecord(Exception):
    """A spooled record that can never be published (torn or from an incompatible version)."""
