"""Small first-hour fixes: a prompt word while the nucleus is unreachable, ``demo --count 0``
refused, ``demo --no-run``, labels of adjacent boxes kept apart, ``deploy_local.sh --help``."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from inspector.annotate import annotate, place_labels
from inspector.cli import main
from inspector.errors import IpcUnavailable
from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.ipc import IpcClient
from inspector.types import Detections

REPO = Path(__file__).resolve().parents[1]


class _Waiter(logging.Handler):
    def __init__(self, words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words = words
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.words in record.getMessage():
            self.seen.set()


@pytest.mark.timeout(60)
def test_an_unreachable_nucleus_is_reported_while_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not 30 s of silence: 'connecting' at once, the reason after the first failed attempt
    (waited for with an event, while the 30 s retry window is still open)."""
    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
                       str(tmp_path / "none.sock"))
    monkeypatch.setenv("SVCUID", "x")
    waiter = _Waiter("cannot connect to the Greengrass nucleus yet")
    ipc_logger = logging.getLogger("inspector.greengrass.ipc")
    ipc_logger.addHandler(waiter)
    # setLevel (not the attribute): it clears the loggers' isEnabledFor cache, which an earlier
    # test's INFO call at WARNING level may have filled
    caplog.set_level(logging.DEBUG, logger="inspector.greengrass.ipc")
    client = IpcClient(lambda on_disconnect: connect_ipc(on_disconnect, timeout_s=0.5),
                       backoff_s=0.05, backoff_max_s=0.2)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            client.start(wait_s=30.0)
        except IpcUnavailable as exc:
            failed.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    try:
        assert waiter.seen.wait(20), waiter.messages
        assert thread.is_alive()  # still retrying: the warning came before giving up
        assert "connecting to the Greengrass nucleus (retrying for up to 30 s)" in \
            waiter.messages[0]
        assert "retrying for up to 30 s" in next(m for m in waiter.messages if "yet" in m)
    finally:
        client.close()  # ends the retries
        thread.join(20)
        ipc_logger.removeHandler(waiter)
    assert not thread.is_alive()
    assert failed and "cannot connect to the Greengrass nucleus" in str(failed[0])


def test_demo_refuses_a_count_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--count", "0"])
    assert exit_info.value.code == 2
    assert "--count: must be at least 1, got 0" in capsys.readouterr().err


def test_demo_no_run_only_writes_the_images(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "already-here.txt").write_text("x")
    assert main(["demo", "--no-run", "--count", "3", "--dir", str(folder)]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(p.name for p in folder.iterdir())
    assert len(written) == 3 and all(Path(w).parent == folder for w in written)
    assert names == sorted(["already-here.txt", *(Path(w).name for w in written)])
    assert not (folder / ".inspector").exists()  # nothing was inspected


def _rects_overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("boxes", [
    [(100, 100, 140, 140), (150, 100, 190, 140), (200, 100, 240, 140)],  # side by side
    [(100, 0, 140, 40), (120, 10, 170, 50), (110, 45, 160, 80)],  # at the top, stacked
    [(0, 0, 30, 30), (5, 5, 35, 35), (10, 10, 40, 40), (15, 15, 45, 45)],  # a pile in a corner
])
def test_labels_of_adjacent_boxes_do_not_overlap(boxes: list[tuple[int, int, int, int]]) -> None:
    labels = place_labels(boxes, [(90, 18)] * len(boxes), (480, 640))
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert not _rects_overlap(a, b), labels
        assert a[0] >= 0 and a[1] >= 0 and a[0] + a[2] <= 640


def test_annotate_draws_every_label_apart() -> None:
    image = np.full((480, 640, 3), 90, np.uint8)
    boxes = np.array([[100, 100, 140, 140], [150, 100, 190, 140]], np.float32)
    detections = Detections(xyxy=boxes, confidence=np.array([0.9, 0.8], np.float32),
                            class_id=np.array([0, 0], np.int64))
    drawn = annotate(image, detections, ("scratch",))
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)


def test_deploy_local_help_prints_the_usage_only() -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "deploy_local.sh"), "--help"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("Deploy both components")
    assert "set -euo pipefail" not in done.stdout and "#" not in done.stdout.splitlines()[0]
    assert done.stdout.rstrip().endswith("imply --no-gdk.")
