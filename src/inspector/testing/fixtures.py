"""Context managers that start the emulators, for pytest fixtures and scripts.

    from inspector.testing.fixtures import running_greengrass

    with running_greengrass(tmp_path, config={"threshold": 0.5}) as gg:
        proc = subprocess.Popen([...], env={**os.environ, **gg.env})
        gg.nucleus.wait_for_published(1)
        gg.stream_manager.wait_for_uploads(1)

Each object's ``.env`` holds the variables a component process needs (the nucleus socket,
SVCUID and AWS_CONTAINER_AUTHORIZATION_TOKEN, the StreamManager port, thing name, region).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.testing.nucleus import MAX_SOCKET_PATH_BYTES, NucleusEmulator
from inspector.testing.streammanager import StreamManagerEmulator

DEFAULT_COMPONENT = "com.example.Inspector"


def _socket_path(tmp_dir: str | os.PathLike[str] | None) -> str | None:
    """``<tmp_dir>/ipc.sock`` when short enough for a Unix socket, else None (a /tmp path)."""
    if tmp_dir is None:
        return None
    path = os.path.join(os.fspath(tmp_dir), "ipc.sock")
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES else None


@contextmanager
def running_nucleus(
    tmp_dir: str | os.PathLike[str] | None = None,
    *,
    config: dict[str, Any] | None = None,
    component_name: str = DEFAULT_COMPONENT,
    **kwargs: Any,
) -> Iterator[NucleusEmulator]:
    """A started NucleusEmulator serving ``config`` as ``component_name``'s configuration.

    The socket goes into ``tmp_dir`` when that path is short enough, else under /tmp. Other
    keyword arguments go to :class:`NucleusEmulator` (svcuid, thing_name, region, ...).
    """
    emulator = NucleusEmulator(
        _socket_path(tmp_dir), component_name=component_name,
        config={component_name: config or {}}, **kwargs,
    )
    with emulator:
        yield emulator


@contextmanager
def running_stream_manager(
    s3_dir: str | os.PathLike[str],
    *,
    auth_token: str | None = None,
    port: int = 0,
) -> Iterator[StreamManagerEmulator]:
    """A started StreamManagerEmulator exporting into ``s3_dir`` (on a free port by default)."""
    with StreamManagerEmulator(Path(s3_dir), port=port, auth_token=auth_token) as emulator:
        yield emulator


@dataclass(frozen=True)
class Greengrass:
    """Both emulators, sharing one token, as a deployed component would see them."""

    nucleus: NucleusEmulator
    stream_manager: StreamManagerEmulator

    @property
    def env(self) -> dict[str, str]:
        return {**self.nucleus.env, **self.stream_manager.env}


@contextmanager
def running_greengrass(
    tmp_dir: str | os.PathLike[str],
    *,
    config: dict[str, Any] | None = None,
    component_name: str = DEFAULT_COMPONENT,
    s3_dir: str | os.PathLike[str] | None = None,
    **nucleus_kwargs: Any,
) -> Iterator[Greengrass]:
    """The nucleus and StreamManager together; S3 objects land in ``s3_dir`` (default
    ``<tmp_dir>/s3``)."""
    with running_nucleus(
        tmp_dir, config=config, component_name=component_name, **nucleus_kwargs
    ) as nucleus, running_stream_manager(
        s3_dir if s3_dir is not None else Path(tmp_dir) / "s3", auth_token=nucleus.svcuid
    ) as stream_manager:
        yield Greengrass(nucleus, stream_manager)
