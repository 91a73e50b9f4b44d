"""The sink seam: standalone (files, console, outbox) and Greengrass (MQTT, S3) sinks alike.

A sink is handed one ``Delivery`` per inspected image, off the inference thread. It raises
``SinkError`` when it cannot deliver; the pipeline logs that and the other sinks go on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.types import Inspection


@dataclass(frozen=True)
class Delivery:
    result: dict[str, Any]  # the schema v1 object, ``device`` included
    inspection: Inspection
    image_path: Path  # where the image file is while the sinks run


class Sink(ABC):
    name: str = "sink"

    @abstractmethod
    def send(self, delivery: Delivery) -> None:
        """Deliver one result; raise SinkError on failure."""

    def close(self, timeout_s: float = 5.0) -> None:  # noqa: B027 - optional hook
        """Flush and release resources, within ``timeout_s``."""
