"""The ONNX Runtime session: the only module that imports onnxruntime.

``OnnxRuntime.from_path`` does the I/O (reads the file once, for its sha256 and the session),
checks that the model is a YOLOv8 detection head and runs one warm-up inference;
``OnnxRuntime(session, ...)`` only stores what it is given and reads names and shapes from it.
onnxruntime errors are translated into ``ModelError`` subclasses naming the file.
"""

from __future__ import annotations

import os

# onnxruntime >= 1.32 keeps a telemetry queue under $HOME/.cache/Microsoft/ in every process unless
# this is set before the import. A device must not collect that.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import ast
import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inspector.errors import ModelError, ModelNotFoundError, ProviderError
from inspector.integrity import check_digest
from inspector.postprocess import head_layout
from inspector.types import Size

logger = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
DEFAULT_INPUT_SIZE = Size(640, 640)  # for models with dynamic height/width
Dim = int | str | None  # a declared dimension: fixed, symbolic or unknown


def available_providers() -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


class OnnxRuntime:
    """One ONNX Runtime session running a YOLOv8 detector: (1, 3, H, W) in, one head out.

    ``run`` is thread-safe (ONNX Runtime sessions are).
    """

    def __init__(
        self,
        session: Any,
        *,
        path: Path | None = None,
        sha256: str = "",
        default_input_size: Size = DEFAULT_INPUT_SIZE,
    ) -> None:
        self.session = session
        self.path = path
        self.sha256 = sha256
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        self.input_name: str = inputs[0].name
        self.input_shape: tuple[Dim, ...] = tuple(inputs[0].shape)
        self.output_names: tuple[str, ...] = tuple(o.name for o in outputs)
        self.output_shape: tuple[Dim, ...] = tuple(outputs[0].shape)
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.input_size = _input_size(self.input_shape, self.metadata, default_input_size)
        # No arena shrinkage after each run: with glibc's mmap threshold fixed
        # (``inspector.malloc``) every run then faults its activations in again, 4,000-6,000
        # page faults and +6-8 ms a run for fp32 YOLOv8n at 640 on 2 vCPUs (22 -> 30 ms);
        # the ~16 MB it gave back between images is not worth a quarter of the session's time.
        self.run_options = ort.RunOptions()

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        default_input_size: Size = DEFAULT_INPUT_SIZE,
        expected_sha256: str = "",
        concurrent_runs: int = 1,
    ) -> OnnxRuntime:
        """Load, check and warm up the model at ``path``.

        With ``expected_sha256``, the bytes read for the session are checked against it first
        (ModelIntegrityError on a mismatch), so no file swapped after a check can be loaded.

        Raises ModelNotFoundError (missing), ProviderError (a provider this onnxruntime lacks:
        the message lists the available ones) or ModelError (empty, truncated, not ONNX, not a
        YOLOv8 detection head, fails to run).

        ``concurrent_runs``: how many ``run`` calls the caller keeps in flight at once (the
        pipeline's inference workers).

        - 1: the intra-op threads spin while a run is under way (ONNX Runtime's default) and
          stop spinning as soon as it returns (``session.force_spinning_stop``), so an idle
          service burns no CPU between images. A run after an idle pause then takes as long as
          one back to back (fp32 YOLOv8n, 2 threads, 2 vCPUs: 22.8 ms after 0.25 s idle).
        - above 1: the intra-op threads never spin (two runs' spinning threads would burn each
          other's cores: two at once 37 img/s spinning vs 45 not) and the memory pattern is
          off (it plans one block of every intermediate tensor per concurrent run: about
          +30 MB per extra run for YOLOv8n at 640, for ~1% speed). The price is a single
          image's run: sleeping pool threads are woken for every parallel section, 40.7 ms
          after 0.25 s idle, no faster than one thread (``benchmarks/session_spin_ab.py``).
        """
        path = Path(path)
        data = _read_model_bytes(path)
        sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256:
            check_digest(path, sha256, expected_sha256)
        available = available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise ProviderError(
                path,
                f"execution provider(s) {', '.join(missing)} not available in onnxruntime "
                f"{ort.__version__}; available: {', '.join(available)}",
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings about unused inputs are noise
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if inter_op_threads:
            options.inter_op_num_threads = inter_op_threads
        if concurrent_runs > 1:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_mem_pattern = False
        else:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            session = _session(data, options, list(providers))
        except Exception as exc:  # onnxruntime raises its own pybind types; translate them all
            raise ModelError(path, _load_failure_reason(exc)) from exc
        runtime = cls(
            session,
            path=path,
            sha256=sha256,
            default_input_size=default_input_size,
        )
        runtime._check_signature()
        raw = runtime._warm_up()
        logger.info(
            "model %s: input %s %s, output %s %s, providers %s",
            path.name,
            runtime.input_name,
            runtime.input_size,
            runtime.output_names[0],
            tuple(raw.shape),
            ",".join(runtime.providers),
        )
        return runtime

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else "<in-memory model>"

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """The first output for a (1, 3, H, W) float32 input."""
        return self.session.run(self.output_names[:1], {self.input_name: tensor},
                                self.run_options)[0]

    def _check_signature(self) -> None:
        """Reject what cannot be a YOLOv8 detector before running it."""
        shape = self.input_shape
        channels_ok = len(shape) == 4 and (shape[1] == 3 or not isinstance(shape[1], int))
        if not channels_ok:
            raise ModelError(
                self.label,
                f"input {self.input_name!r} has shape {_shape(shape)}; "
                "expected an image batch (1, 3, H, W)",
            )
        out = self.output_shape
        fixed = tuple(d if isinstance(d, int) else None for d in out)
        problem = None
        if len(out) != 3:
            problem = f"rank {len(out)}"
        elif None not in fixed:
            try:
                head_layout(tuple(int(d) for d in out))  # type: ignore[arg-type]
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            raise ModelError(
                self.label,
                f"output {self.output_names[0]!r} has shape {_shape(out)}; not a YOLOv8 detection "
                f"head (expected (1, 4+nc, N) or (1, N, 4+nc)): {problem}",
            )

    def _warm_up(self) -> np.ndarray:
        """One inference on a grey image: pays the first-run costs and checks the real output."""
        size = self.input_size
        tensor = np.full((1, 3, size.height, size.width), 114 / 255, dtype=np.float32)
        try:
            raw = np.asarray(self.run(tensor))
        except Exception as exc:
            raise ModelError(self.label, f"warm-up inference failed: {exc}") from exc
        try:
            head_layout(tuple(raw.shape))
        except ValueError as exc:
            raise ModelError(self.label, f"output is not a YOLOv8 detection head: {exc}") from exc
        return raw


def _session(data: bytes, options: Any, providers: list[str]) -> Any:
    """The session made from exactly ``data`` (the bytes whose sha256 was checked).

    On Linux they are handed over as a private in-memory file (memfd): onnxruntime then loads
    from a file, which leaves ~12 MB less resident for an fp32 YOLOv8n than a session made
    from a Python bytes object (measured: +21.6 vs +33.3 MB at load), and no other file can
    take its place (the memfd belongs to this process and is closed once the session exists).
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not Path("/proc/self/fd").is_dir():
        return ort.InferenceSession(data, sess_options=options, providers=providers)
    fd = memfd_create("inspector-model.onnx", getattr(os, "MFD_CLOEXEC", 0))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return ort.InferenceSession(f"/proc/self/fd/{fd}", sess_options=options,
                                    providers=providers)
    finally:
        os.close(fd)


def _read_model_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise ModelError(path, "is a directory, not an ONNX file") from exc
    except PermissionError as exc:
        raise ModelError(path, "permission denied") from exc
    except OSError as exc:
        raise ModelError(path, f"cannot read it: {exc.strerror or exc}") from exc
    if not data:
        raise ModelError(path, "empty file (0 bytes); not an ONNX model")
    return data


def _load_failure_reason(exc: Exception) -> str:
    text = str(exc)
    if "protobuf parsing failed" in text or "INVALID_PROTOBUF" in text:
        return (
            "not a valid ONNX model: protobuf parsing failed "
            "(a truncated download, or a file of another format)"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"onnxruntime cannot load it: {first_line}"


def _input_size(shape: tuple[Dim, ...], metadata: Mapping[str, str], default: Size) -> Size:
    """Fixed H/W from the input shape; for dynamic ones Ultralytics' ``imgsz``, else ``default``."""
    height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return Size(height=height, width=width)
    try:
        imgsz = ast.literal_eval(metadata.get("imgsz", ""))
        if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
            return Size(height=int(imgsz[0]), width=int(imgsz[1]))
    except (ValueError, SyntaxError, TypeError):
        pass
    return default


def _shape(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
