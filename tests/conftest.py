"""Shared fixtures. Model builders live in ``onnx_factory`` (importable from any test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inspector.testing.fixtures import running_stream_manager
from inspector.testing.streammanager import StreamManagerEmulator
from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model

# One scratch at (cx 320, cy 240, w 40, h 20) in model-input pixels, plus a weaker duplicate
# that NMS removes and a candidate under the default confidence threshold.
TINY_HEAD_ROWS = [
    (320.0, 240.0, 40.0, 20.0, 0.9),
    (322.0, 240.0, 40.0, 20.0, 0.6),
    (100.0, 100.0, 10.0, 10.0, 0.1),
]


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """A 640x640 YOLOv8-like ONNX model with one class ("scratch") and a known, fixed output:
    after NMS at the defaults, one box xyxy (300, 230, 340, 250) in model-input pixels, 0.9."""
    raw = head_tensor(TINY_HEAD_ROWS)
    model = constant_head_model(raw, input_size=Size(640, 640), name="tiny", version="1.2.3")
    return write_model(tmp_path / "tiny.onnx", model)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def stream_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[StreamManagerEmulator]:
    """A StreamManager emulator whose address and token the stream_manager client finds in
    the environment, as a Greengrass component's process does."""
    with running_stream_manager(tmp_path / "s3", auth_token="token") as emulator:
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator
