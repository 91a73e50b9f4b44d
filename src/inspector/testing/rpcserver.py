"""A small event-stream RPC server on a Unix socket: the transport under the nucleus emulator.

It owns the socket, the connections and the protocol rules that are not Greengrass-specific:
every message must carry the three INT32 RPC headers, the first message must be CONNECT (with
``:version`` 0.1.0) and is answered by CONNECT_ACK, PINGs are answered, a new stream id is an
operation request (``operation`` header) and a TERMINATE_STREAM flag from the client closes its
stream. What operations mean is left to the callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from inspector.testing.eventstream import (
    Decoder,
    FramingError,
    Message,
    MessageFlag,
    MessageType,
    encode_message,
    rpc_fields,
    rpc_message,
)
from inspector.testing.sockets import Connection, SocketServer

logger = logging.getLogger(__name__)

RPC_VERSION = "0.1.0"
# The client closes on a rejected CONNECT_ACK and raises AccessDeniedError; if the server closed
# first the client would report a plain socket error instead. Close later, in case it does not.
REJECTED_GRACE_S = 2.0


class RpcConnection(Connection):
    """One client connection. ``streams`` belongs to the owner of the server (open operations
    by stream id); the server only asks whether a stream id is known."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        super().__init__(sock, number)
        self.principal: str | None = None  # who connected: set by an accepted CONNECT
        self.rejected = False
        self.last_stream_id = 0
        self.streams: dict[int, Any] = {}

    def send(self, message: Message) -> bool:
        """Send one message whole; False if the connection is (now) closed."""
        return self.send_bytes(encode_message(message))


# authenticate(connection, CONNECT message) -> the principal, or None to reject
Authenticate = Callable[[RpcConnection, Message], "str | None"]
# on_request(connection, stream id, operation, first message): a new operation stream
OnRequest = Callable[[RpcConnection, int, str, Message], None]
OnStreamClosed = Callable[[RpcConnection, int], None]
OnDisconnect = Callable[[RpcConnection], None]


class RpcServer(SocketServer[RpcConnection]):
    thread_name = "rpc"

    def __init__(
        self,
        socket_path: str,
        *,
        authenticate: Authenticate,
        on_request: OnRequest,
        on_stream_closed: OnStreamClosed,
        on_disconnect: OnDisconnect,
    ) -> None:
        super().__init__()
        self.socket_path = socket_path
        self._authenticate = authenticate
        self._on_request = on_request
        self._on_stream_closed = on_stream_closed
        self._on_disconnect = on_disconnect

    def start(self) -> None:
        with self._lock:
            self.start_listening()

    def stop(self) -> None:
        """Stop listening (the socket file goes away) and drop every connection."""
        self.stop_listening()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def _bind(self) -> socket.socket:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(16)
        return listener

    def _new_connection(self, sock: socket.socket, number: int) -> RpcConnection:
        return RpcConnection(sock, number)

    def _disconnected(self, conn: RpcConnection) -> None:
        self._on_disconnect(conn)

    def _serve(self, conn: RpcConnection) -> None:
        decoder = Decoder()
        try:
            while not conn.closed.is_set():
                try:
                    data = conn.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for message in decoder.feed(data):
                    if not self._handle(conn, message):
                        return
        except FramingError as exc:
            logger.warning("connection %d sent bad framing: %s", conn.number, exc)
            conn.send(rpc_message(MessageType.PROTOCOL_ERROR, payload=str(exc).encode()))

    def _protocol_error(self, conn: RpcConnection, why: str) -> bool:
        logger.warning("connection %d: protocol error: %s", conn.number, why)
        conn.send(rpc_message(MessageType.PROTOCOL_ERROR, payload=why.encode()))
        return False

    def _handle(self, conn: RpcConnection, message: Message) -> bool:
        """Handle one message; False closes the connection."""
        message_type, flags, stream_id = rpc_fields(message)
        if conn.rejected:
            return True
        if conn.principal is None:
            if message_type is not MessageType.CONNECT or stream_id != 0:
                return self._protocol_error(conn, f"first message was {message_type.name}")
            self._connect(conn, message)
            return True
        if message_type is MessageType.PING:
            conn.send(rpc_message(MessageType.PING_RESPONSE, payload=message.payload))
            return True
        if message_type is MessageType.PING_RESPONSE:
            return True
        if stream_id == 0 or message_type not in (
            MessageType.APPLICATION_MESSAGE,
            MessageType.APPLICATION_ERROR,
        ):
            return self._protocol_error(conn, f"{message_type.name} on stream {stream_id}")
        if stream_id > conn.last_stream_id:
            operation = message.header("operation")
            if not isinstance(operation, str):
                return self._protocol_error(conn, f"stream {stream_id} opened without operation")
            conn.last_stream_id = stream_id
            self._on_request(conn, stream_id, operation, message)
        elif stream_id in conn.streams and flags & MessageFlag.TERMINATE_STREAM:
            self._on_stream_closed(conn, stream_id)
        # anything else is for a stream that is closed already: ignored, as the SDK's server does
        return True

    def _connect(self, conn: RpcConnection, message: Message) -> None:
        version = message.header(":version")
        principal = self._authenticate(conn, message) if version == RPC_VERSION else None
        if principal is None:
            logger.info("connection %d rejected (version %r)", conn.number, version)
            conn.send(rpc_message(MessageType.CONNECT_ACK, flags=MessageFlag.NONE))
            conn.rejected = True
            timer = threading.Timer(REJECTED_GRACE_S, conn.close)
            timer.daemon = True
            timer.start()
            return
        conn.principal = principal
        conn.send(rpc_message(MessageType.CONNECT_ACK, flags=MessageFlag.CONNECTION_ACCEPTED))
