"""The README's emulator walk-through runs as written: the bash block under "Try the component on
a laptop", in a fresh folder whose ``.venv/bin/inspector`` is this interpreter's ``inspector``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### Try the component on a laptop: the emulator walk-through"


def walkthrough() -> str:
    text = README.read_text("utf-8")
    assert HEADING in text, "the README's emulator walk-through is gone"
    match = re.search(r"```bash\n(.*?)```", text[text.index(HEADING):], re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.timeout(180)
def test_the_readme_emulator_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough()
    assert ".venv/bin/inspector emulate" in script and "inspector run --once" in script
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    shim = venv_bin / "inspector"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m inspector "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SVCUID", "STREAM_MANAGER", "INSPECTOR_"))}
    env.update(TMPDIR=str(tmp_path), ORT_DISABLE_TELEMETRY="1")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=150)
    log = done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + log[-3000:]
    samples = [line for line in done.stdout.splitlines()
               if re.fullmatch(r"/\S+/images/tag_00\d\.(jpg|png)", line)]
    assert len(samples) == 4, done.stdout
    published = re.findall(
        r"PublishToIoTCore from com\.inspector\.Inference: topic=inspector/results", log)
    assert len(published) == 4, log[-3000:]
    defects = re.findall(r"tag_00\d\.\w+: defect", done.stdout + log)  # run logs to stdout
    uploaded = [line for line in done.stdout.splitlines() if "/s3/demo-bucket/" in line]
    assert defects and len(uploaded) == len(defects), (defects, uploaded)
    assert "stopped (drained)" in done.stdout + log
