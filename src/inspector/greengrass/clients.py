"""The one module that creates the real SDK clients (awsiotsdk IPC, StreamManager).

Everything else is handed these factories, so tests can pass their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def connect_ipc(on_disconnect: Callable[[], None], *, timeout_s: float = 10.0) -> Any:
    """A connected ``GreengrassCoreIPCClientV2`` (socket and token from the environment);
    ``on_disconnect()`` is called when the connection drops."""
    import awsiot.greengrasscoreipc
    from awsiot.eventstreamrpc import LifecycleHandler
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    class _Lifecycle(LifecycleHandler):
        def on_disconnect(self, reason: Exception | None) -> None:
            logger.debug("IPC connection closed: %r", reason)
            on_disconnect()

        def on_error(self, error: Exception) -> bool:
            logger.warning("IPC connection error: %r", error)
            return True  # close; the keeper reconnects

    connection = awsiot.greengrasscoreipc.connect(lifecycle_handler=_Lifecycle(), timeout=timeout_s)
    return GreengrassCoreIPCClientV2(client=connection)


def stream_manager_client(
    *, connect_timeout_s: float = 3.0, request_timeout_s: float = 10.0
) -> Any:
    """A connected ``StreamManagerClient`` (port and token from the environment).

    Raises ConnectionError (or the SDK's StreamManagerException) when StreamManager is down.
    """
    from stream_manager import StreamManagerClient

    return StreamManagerClient(
        connect_timeout=connect_timeout_s, request_timeout=request_timeout_s,
        logger=_SDK_LOGGER,
    )


class _QuietWhileDown(logging.Filter):
    """The SDK logs an ERROR for every failed (re)connection; the uploader already reports
    StreamManager being down (throttled), so those lines are dropped."""

    NOISE = ("Connection error while connecting", "Unable to read from socket")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


_SDK_LOGGER = logging.getLogger("inspector.greengrass.streammanager_sdk")
_SDK_LOGGER.addFilter(_QuietWhileDown())
