"""The sink seam: standalone (files, console, outbox) and Greengrass (MQTT, S3) sinks alike.

A sink is handed one ``Delivery`` per inspected image, off the inference thread. ``send`` returns
only once the result is durable for that sink (fsynced, spooled, or accepted by StreamManager);
it raises ``SinkError`` when it cannot make it so. The image is then kept (not moved to done): the
pipeline retries that sink (only that one) with backoff, and stops the service after
``SinkStallSeconds`` (see ``inspector.delivery``). A sink whose ``send`` does several durable
writes records the finished ones in ``delivery.progress`` so a retry does not repeat them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inspector.types import Inspection


class Hold(Protocol):
    """Custody of a flagged image that a sink still needs after ``send`` returned.

    The pipeline moves the image to the held folder before ``send`` and settles it (done or
    deleted, or failed) only when every sink that claimed it has called ``release``. Thread-safe;
    a second release by the same sink is ignored.
    """

    def release(self, sink: str, *, ok: bool = True, reason: str = "") -> None: ...


@dataclass(frozen=True)
class Delivery:
    result: dict[str, Any]  # the schema v1 object, ``device`` included
    inspection: Inspection
    image_path: Path  # where the image file is while the sinks run
    hold: Hold | None = None  # set when a sink claimed the image (``Sink.claims_image``)
    progress: set[str] = field(default_factory=set)  # parts already durable (for retries)


class Sink(ABC):
    name: str = "sink"

    @abstractmethod
    def send(self, delivery: Delivery) -> None:
        """Deliver one result; raise SinkError on failure."""

    def close(self, timeout_s: float = 5.0) -> None:  # noqa: B027 - optional hook
        """Flush and release resources, within ``timeout_s``."""

    def claims_image(self, delivery: Delivery) -> bool:
        """True when this sink reads ``delivery.image_path`` after ``send`` returns (an S3 upload
        through StreamManager reads the file later). The image is then held, and ``send`` must
        make sure ``delivery.hold.release(self.name, ok=...)`` is called once the upload is
        confirmed or has finally failed. Asked before ``send``, on the delivery thread, with
        ``image_path`` still in the watch directory and ``hold`` None."""
        return False

    def resume_hold(self, result: dict[str, Any], image_path: Path, hold: Hold) -> bool:
        """After a restart: an image in the held folder from the previous run, with its result.
        Return True to take custody again (and release ``hold`` later); the result itself was
        already delivered and must not be sent again."""
        return False

    def reconfigure(self, settings: Any) -> None:  # noqa: B027 - optional hook
        """Apply live settings (an ``inspector.settings.Settings``) between two images."""

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """At start-up, before any image is touched: raise SinkError (naming the file and the
        reason) when this sink cannot possibly deliver (an unwritable results file)."""

    def status(self) -> dict[str, int]:
        """Counts for the metrics and the stop summary (e.g. uploaded, retried, failed)."""
        return {}
