"""Several inference workers on one session; queues that carry the tensor, not the frame; the
reduced decode inside the pipeline."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspector.detector import Detector
from inspector.imageio import read_image
from inspector.runtime import OnnxRuntime
from inspector.sources import ListSource
from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model
from test_pipeline import Harness, RecordingSink


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, 0.9)])  # one box, conf 0.9
    model = constant_head_model(raw, input_size=Size(64, 96), name="tiny", version="1")
    return write_model(tmp_path_factory.mktemp("m") / "tiny.onnx", model)


class Rendezvous:
    """Wraps a detector: ``infer`` waits until ``parties`` calls are inside it at once (bounded:
    a lone call gives up after ``timeout_s`` and fails its image)."""

    def __init__(self, detector: Detector, parties: int, timeout_s: float = 5.0) -> None:
        self._detector = detector
        self._barrier = threading.Barrier(parties, timeout=timeout_s)
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def infer(self, tensor: np.ndarray) -> Any:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        try:
            self._barrier.wait()
            return self._detector.infer(tensor)
        finally:
            with self._lock:
                self.inside -= 1


def test_two_workers_run_two_images_at_once_on_one_session(tmp_path: Path, model_path: Path):
    detector = Detector.from_path(model_path, concurrent_runs=2)
    gate = Rendezvous(detector, parties=2)
    sink = RecordingSink()
    h = Harness(tmp_path, gate, [sink], inference_workers=2)
    paths = [h.image(f"img_{n:02d}.jpg", seed=n) for n in range(6)]
    h.run(paths)
    # every image met another one inside the session: two runs in flight, on two threads
    assert sorted(d.inspection.image.name for d in sink.deliveries) == [p.name for p in paths]
    assert gate.most_inside == 2
    assert gate.threads == {"inference-0", "inference-1"}
    assert h.pipeline.stats.processed == 6 and h.pipeline.stats.failed == 0
    assert sorted(p.name for p in h.disposer.done_dir.iterdir()) == [p.name for p in paths]


def test_one_worker_never_runs_two_images_at_once(tmp_path: Path, model_path: Path):
    # the same rendezvous with one worker: each image waits alone, gives up, and is failed
    # with the reason (the check above can fail)
    gate = Rendezvous(Detector.from_path(model_path), parties=2, timeout_s=0.2)
    sink = RecordingSink()
    h = Harness(tmp_path, gate, [sink], inference_workers=1)
    h.run([h.image("a.jpg"), h.image("b.jpg", seed=1)])
    assert gate.most_inside == 1 and not sink.deliveries
    assert h.pipeline.stats.failed == 2
    assert "inference failed" in (h.disposer.failed_dir / "a.jpg.reason.txt").read_text()


def test_the_decoded_frame_is_freed_before_inference(tmp_path: Path, model_path: Path):
    """The [prepared] queue carries the tensor and the image's facts: the decoded frame of an
    image is gone by the time the image is inferred. One decode worker and one inference worker
    take the images in the same order, so the k-th run is the k-th image read."""
    frames: list[weakref.ref[np.ndarray]] = []
    alive_at_inference: list[bool] = []
    detector = Detector.from_path(model_path)

    def read(path: Path, fit: Size | None = None) -> Any:
        decoded = read_image(path, fit=fit)
        frames.append(weakref.ref(decoded.bgr))
        return decoded

    class Watching:
        def __getattr__(self, name: str) -> Any:
            return getattr(detector, name)

        def infer(self, tensor: np.ndarray) -> Any:
            gc.collect()
            alive_at_inference.append(frames[len(alive_at_inference)]() is not None)
            return detector.infer(tensor)

    sink = RecordingSink()
    h = Harness(tmp_path, Watching(), [sink], read=read, inference_workers=1)
    paths = [h.image(f"f{n}.jpg", seed=n, size=(300, 400)) for n in range(4)]
    h.run(paths)
    assert len(sink.deliveries) == 4
    assert alive_at_inference == [False] * 4


def test_the_pipeline_decodes_large_jpegs_reduced_and_reports_original_pixels(
    tmp_path: Path, model_path: Path
):
    detector = Detector.from_path(model_path)  # input 96 x 64
    scales: dict[str, int] = {}

    def read(path: Path, fit: Size | None = None) -> Any:
        assert fit == detector.model.input_size
        decoded = read_image(path, fit=fit)
        scales[path.name] = decoded.scale
        return decoded

    sink = RecordingSink()
    h = Harness(tmp_path, detector, [sink], read=read)
    path = h.image("big.jpg", size=(600, 800))
    full = detector.inspect(read_image(path))  # every pixel decoded, for comparison
    h.run([path])
    assert scales == {"big.jpg": 8}
    inspection = sink.deliveries[0].inspection
    assert inspection.image.size == Size(600, 800)
    np.testing.assert_allclose(inspection.detections.xyxy, full.detections.xyxy, atol=1e-3)
    assert sink.deliveries[0].result["image"]["height"] == 600


def test_a_model_with_another_input_size_reads_the_image_again(tmp_path: Path, model_path: Path):
    """The model changes while an image waits with a tensor for the old input size: the image is
    read and letterboxed again for the new model (the frame is not kept around for this)."""
    small = Detector.from_path(model_path)
    raw = head_tensor([(96.0, 64.0, 40.0, 20.0, 0.9)])
    other = write_model(tmp_path / "big.onnx",
                        constant_head_model(raw, input_size=Size(128, 192), name="big"))
    big = Detector.from_path(other)
    release = threading.Event()
    reads: list[tuple[str, Size | None]] = []

    def read(path: Path, fit: Size | None = None) -> Any:
        reads.append((path.name, fit))
        return read_image(path, fit=fit)

    class Held:
        def __getattr__(self, name: str) -> Any:
            return getattr(small, name)

        def infer(self, tensor: np.ndarray) -> Any:
            release.wait(5)
            return small.infer(tensor)

    sink = RecordingSink()
    h = Harness(tmp_path, Held(), [sink], read=read)
    a, b = h.image("a.jpg"), h.image("b.jpg", seed=1)
    h.pipeline.start()
    assert h.pipeline.submit(a) and h.pipeline.submit(b)
    deadline = threading.Event()
    for _ in range(500):  # until b is decoded for the small model (a is held in infer)
        if ("b.jpg", small.model.input_size) in reads:
            break
        deadline.wait(0.01)
    h.pipeline.set_detector(big)
    release.set()
    assert h.pipeline.wait_idle(timeout=10)
    h.stop()
    by_name = {d.inspection.image.name: d.inspection for d in sink.deliveries}
    assert by_name["b.jpg"].model.name == "big"
    assert ("b.jpg", big.model.input_size) in reads


def test_concurrent_runs_turn_spinning_and_the_memory_pattern_off(model_path: Path):
    one = OnnxRuntime.from_path(model_path).session.get_session_options()
    two = OnnxRuntime.from_path(model_path, concurrent_runs=2).session.get_session_options()
    assert one.enable_mem_pattern and not two.enable_mem_pattern
    assert two.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_model_loaded_through_a_memfd_names_its_own_file_in_errors(tmp_path: Path,
                                                                      model_path: Path):
    from inspector.errors import ModelError

    runtime = OnnxRuntime.from_path(model_path)  # loads, checks and warms up as before
    assert runtime.path == model_path and runtime.input_size == Size(64, 96)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model_path.read_bytes()[:200])
    with pytest.raises(ModelError) as caught:
        OnnxRuntime.from_path(broken)
    assert "broken.onnx" in str(caught.value) and "/proc/self/fd" not in str(caught.value)


def test_results_are_handed_on_in_the_order_the_images_were_taken(tmp_path: Path,
                                                                   model_path: Path):
    """The first image's run ends after the second's: its result still goes first."""
    detector = Detector.from_path(model_path, concurrent_runs=2)
    second_done = threading.Event()
    finished: list[int] = []
    lock = threading.Lock()
    calls = [0]

    class SlowFirst:
        def __getattr__(self, name: str) -> Any:
            return getattr(detector, name)

        def infer(self, tensor: np.ndarray) -> Any:
            with lock:
                calls[0] += 1
                mine = calls[0]
            if mine == 1:
                second_done.wait(5)
            raw = detector.infer(tensor)
            finished.append(mine)
            if mine == 2:
                second_done.set()
            return raw

    sink = RecordingSink()
    h = Harness(tmp_path, SlowFirst(), [sink], inference_workers=2)
    paths = [h.image(f"img_{n}.jpg", seed=n) for n in range(4)]
    h.run(paths)
    assert finished[:2] == [2, 1]  # the runs did finish out of order
    assert [d.inspection.image.name for d in sink.deliveries] == [p.name for p in paths]


def test_annotate_in_place_draws_on_the_frame_itself():
    from inspector.annotate import annotate
    from inspector.types import Detections

    image = np.full((120, 160, 3), 90, np.uint8)
    detections = Detections(xyxy=np.array([[20, 20, 60, 60]], np.float32),
                            confidence=np.array([0.9], np.float32),
                            class_id=np.array([0], np.int64))
    copy = annotate(image, detections, ("scratch",))
    assert copy is not image and (image == 90).all()
    drawn = annotate(image, detections, ("scratch",), in_place=True)
    assert drawn is image and np.array_equal(drawn, copy)


def test_spinning_follows_the_number_of_concurrent_runs(model_path: Path):
    """One run at a time: the intra-op threads spin during a run and stop when it returns;
    runs at once: they never spin. No arena shrinkage per run (it
    cost every run its page faults again)."""
    alone = OnnxRuntime.from_path(model_path, intra_op_threads=2, concurrent_runs=1)
    shared = OnnxRuntime.from_path(model_path, intra_op_threads=2, concurrent_runs=2)
    a, s = alone.session.get_session_options(), shared.session.get_session_options()
    assert a.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have"):  # not set: ONNX Runtime spins
        a.get_session_config_entry("session.intra_op.allow_spinning")
    assert a.enable_mem_pattern
    assert s.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert not s.enable_mem_pattern
    for runtime in (alone, shared):
        with pytest.raises(RuntimeError, match="does not have"):
            runtime.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
        assert runtime.run(np.full((1, 3, 64, 96), 0.5, np.float32)).shape[0] == 1


def test_queued_images_wait_as_uint8_content_not_float_tensors(tmp_path: Path, model_path: Path):
    """While inference is busy, what waits between decode and inference is the letterbox
    content (uint8, at most the model input's H x W x 3), never the 4 x larger float tensor."""
    detector = Detector.from_path(model_path)
    release = threading.Event()

    class Held:
        def __getattr__(self, name: str) -> Any:
            return getattr(detector, name)

        def infer(self, tensor: np.ndarray) -> Any:
            assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 64, 96)
            assert release.wait(10)
            return detector.infer(tensor)

    sink = RecordingSink()
    h = Harness(tmp_path, Held(), [sink], inference_workers=1)
    paths = [h.image(f"img_{n:02d}.jpg", seed=n) for n in range(5)]
    source = ListSource(paths)
    h.pipeline.start()
    source.start(h.pipeline.submit)
    try:
        queued = h.pipeline._prepared  # the [prepared] queue: full while inference is held
        deadline = time.monotonic() + 10
        while not queued.full():
            assert time.monotonic() < deadline, "the prepared queue never filled"
            time.sleep(0.01)
        items = list(queued.queue)
        assert items and all(i.content.dtype == np.uint8 for i in items)
        assert all(i.content.nbytes <= 64 * 96 * 3 for i in items)
        assert not any(isinstance(v, np.ndarray) and v.dtype == np.float32
                       for i in items for v in vars(i).values())
    finally:
        release.set()
    deadline = time.monotonic() + 20
    while len(h.settled) < len(paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    h.pipeline.stop()
    assert sorted(d.inspection.image.name for d in sink.deliveries) == [p.name for p in paths]


def test_one_image_gets_every_intra_op_thread_when_the_session_is_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """InferenceWorkers > 1 must not cost a single image its threads: on the shared session
    (``concurrent_runs=2``, ``IntraOpThreads`` 2) one run alone still hands work to the pool's
    second thread. Told by ONNX Runtime's own profile (per node: the pool threads that ran
    parts of it), not by timing; the bundled YOLOv8n, whose convolutions are split."""
    import json

    from inspector import runtime
    from inspector.models import default_model_path

    real = runtime.ort.SessionOptions

    def profiled() -> Any:
        options = real()
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp_path / "ort")
        return options

    monkeypatch.setattr(runtime.ort, "SessionOptions", profiled)
    shared = OnnxRuntime.from_path(default_model_path(precision="fp32"), intra_op_threads=2,
                                   concurrent_runs=2)  # its warm-up is one run, alone
    events = json.loads(Path(shared.session.end_profiling()).read_text())
    stats = [e["args"]["thread_scheduling_stats"] for e in events
             if e.get("cat") == "Node" and "thread_scheduling_stats" in e.get("args", {})]
    helpers = {tid for s in stats for tid, sub in s.get("sub_threads", {}).items()
               if sub.get("num_run", 0) > 0}
    assert len(helpers) == 1  # the pool's one thread besides the caller: 2 in all
    assert sum(1 for s in stats if s.get("sub_threads")) > len(stats) // 4
