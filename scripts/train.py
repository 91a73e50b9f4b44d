#!/usr/bin/env python3
"""Train the scratch detector: Ultralytics YOLOv8n from ``yolov8n.yaml``, no pretrained weights.

Needs the ``train`` extra (torch, ultralytics); never run on a device or in CI. Nothing is
downloaded: YOLO_OFFLINE is set, auto-install is off and plots (which fetch a font) are off.

    python scripts/train.py --data data/train/data.yaml --imgsz 640 --epochs 30 --name scratch640
    python scripts/train.py --resume runs/scratch640/weights/last.pt   # after an interruption

Every setting goes to ``<run>/inspector_train.json`` beside Ultralytics' own ``args.yaml`` so a
model in models/ can always say how it was made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def offline_environment() -> None:
    """Keep Ultralytics from reaching out: no downloads, no pip, no telemetry."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault(
        "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "inspector-yolo-config")
    )
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def skip_amp_download_check() -> None:
    """Trust AMP on a GPU without Ultralytics' check, which downloads yolo26n.pt to run it.

    Offline that download fails with an error the check does not catch, and training on a GPU
    stops before its first batch. AMP (fp16 autocast) is what Ultralytics uses on any CUDA GPU
    after a passing check; the check only guards against broken drivers.
    """
    import ultralytics.engine.trainer as trainer

    def check_amp(model: object, *args: object, **kwargs: object) -> bool:
        print("AMP check skipped (it would download yolo26n.pt; offline): AMP on", flush=True)
        return True

    trainer.check_amp = check_amp  # type: ignore[assignment]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, help="data.yaml written by scripts/make_dataset.py")
    p.add_argument("--resume", type=Path, help="resume an interrupted run from its last.pt")
    p.add_argument("--weights", type=Path, help="start from these weights (curriculum stage 2)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument(
        "--time",
        type=float,
        default=None,
        help="hours to train; Ultralytics fits the epochs (and LR schedule) to it",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads (Ultralytics would pick cpu_count-1 = 1 on 2 cores)",
    )
    p.add_argument("--workers", type=int, default=2, help="data loader workers")
    p.add_argument("--device", default="cpu", help="'cpu' or a CUDA index such as '0'")
    p.add_argument("--project", type=Path, default=REPO / "runs")
    p.add_argument("--name", default="scratch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lr0", type=float, default=None, help="initial learning rate (default: Ultralytics')"
    )
    p.add_argument("--optimizer", default="auto")
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="learning-rate warm-up epochs (Ultralytics: 3; shorter when continuing --weights)",
    )
    p.add_argument("--cache", default="ram", help="'ram', 'disk' or 'false'")
    p.add_argument(
        "--val-every-end",
        action="store_true",
        help="validate only after the last epoch (saves time on CPU)",
    )
    # Augmentation tuned for thin objects: keep them at their size (little scale jitter), any
    # orientation (flips), mosaic on (it crops, it does not shrink), mild colour jitter.
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--mosaic", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=3)
    p.add_argument("--degrees", type=float, default=5.0)
    p.add_argument("--translate", type=float, default=0.1)
    p.add_argument("--fliplr", type=float, default=0.5)
    p.add_argument("--flipud", type=float, default=0.5)
    p.add_argument("--hsv-v", type=float, default=0.3)
    p.add_argument("--patience", type=int, default=100)
    # Robustness training (scripts/train_robust.sh): unset leaves Ultralytics' own default.
    p.add_argument("--hsv-s", type=float, default=None, help="saturation jitter (tinted metal)")
    p.add_argument("--shear", type=float, default=None, help="shear degrees")
    p.add_argument("--perspective", type=float, default=None,
                   help="perspective jitter (camera angle), e.g. 0.0005")
    p.add_argument("--mixup", type=float, default=None)
    p.add_argument("--box", type=float, default=None,
                   help="box loss gain (Ultralytics 7.5): higher attends to IoU 0.5-0.95 quality")
    p.add_argument("--dfl", type=float, default=None, help="DFL loss gain (Ultralytics 1.5)")
    p.add_argument("--cos-lr", action="store_true", help="cosine learning-rate schedule")
    return p.parse_args(argv)


OPTIONAL_TRAIN_ARGS = ("hsv_s", "shear", "perspective", "mixup", "box", "dfl")


def optional_train_args(args: argparse.Namespace) -> dict[str, object]:
    """The robustness settings that were given (the others keep Ultralytics' defaults)."""
    extra: dict[str, object] = {
        name: getattr(args, name) for name in OPTIONAL_TRAIN_ARGS if getattr(args, name) is not None
    }
    if args.cos_lr:
        extra["cos_lr"] = True
    return extra


def epochs_run(run_dir: Path) -> int | None:
    """Epochs that finished (rows of results.csv): ``--time`` overrides ``--epochs``."""
    results = run_dir / "results.csv"
    if not results.exists():
        return None
    return max(0, len(results.read_text().strip().splitlines()) - 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    offline_environment()

    import torch
    import ultralytics
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # Ultralytics resets torch to min(8, cpu_count - 1) threads: ONE on a 2-core machine.
    torch_utils.NUM_THREADS = args.threads
    torch.set_num_threads(args.threads)
    if args.device != "cpu":
        skip_amp_download_check()

    started = time.time()
    if args.resume:
        model = YOLO(str(args.resume))
        results = model.train(resume=True)
        run_dir = Path(model.trainer.save_dir)
    else:
        if not args.data:
            print("--data is required unless --resume is given", file=sys.stderr)
            return 2
        model = YOLO(str(args.weights)) if args.weights else YOLO("yolov8n.yaml")
        train_args = dict(
            data=str(args.data.resolve()),
            imgsz=args.imgsz,
            epochs=args.epochs,
            batch=args.batch,
            workers=args.workers,
            device=args.device,
            project=str(args.project.resolve()),
            name=args.name,
            exist_ok=True,
            seed=args.seed,
            deterministic=False,
            # False would make Ultralytics (8.3+) rebuild the model from its yaml and throw the
            # --weights away; True keeps the loaded checkpoint. From yolov8n.yaml nothing loads.
            pretrained=bool(args.weights),
            optimizer=args.optimizer,
            cache=False if args.cache == "false" else args.cache,
            plots=False,
            amp=args.device != "cpu",
            scale=args.scale,
            mosaic=args.mosaic,
            close_mosaic=args.close_mosaic,
            degrees=args.degrees,
            translate=args.translate,
            fliplr=args.fliplr,
            flipud=args.flipud,
            hsv_v=args.hsv_v,
            patience=args.patience,
            val=not args.val_every_end,
        )
        if args.time is not None:
            train_args["time"] = args.time
        if args.lr0 is not None:
            train_args["lr0"] = args.lr0
        if args.warmup_epochs is not None:
            train_args["warmup_epochs"] = args.warmup_epochs
        train_args.update(optional_train_args(args))
        results = model.train(**train_args)
        run_dir = Path(model.trainer.save_dir)

    record = {
        "argv": sys.argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if args.device != "cpu" else None,
        "wall_s": round(time.time() - started, 1),
        "epochs_run": epochs_run(run_dir),
        "best": str(run_dir / "weights" / "best.pt"),
        "metrics": getattr(results, "results_dict", None),
    }
    (run_dir / "inspector_train.json").write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
