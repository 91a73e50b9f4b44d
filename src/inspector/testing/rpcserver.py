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

logger = logging.getLogger(__name__)

RPC_VERSION = "0.1.0"
# The client closes on a rejected CONNECT_ACK and raises AccessDeniedError; if the server closed
# first the client would report a plain socket error instead. Close later, in case it does not.
REJECTED_GRACE_S = 2.0


class RpcConnection:
    """One client connection. ``streams`` belongs to the owner of the server (open operations
    by stream id); the server only asks whether a stream id is known."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.principal: str | None = None  # who connected: set by an accepted CONNECT
        self.rejected = False
        self.last_stream_id = 0
        self.streams: dict[int, Any] = {}
        self.closed = threading.Event()
        self._write_lock = threading.Lock()

    def send(self, message: Message) -> bool:
        """Send one message whole; False if the connection is (now) closed."""
        data = encode_message(message)
        with self._write_lock:
            if self.closed.is_set():
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()
                return False
        return True

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# authenticate(connection, CONNECT message) -> the principal, or None to reject
Authenticate = Callable[[RpcConnection, Message], "str | None"]
# on_request(connection, stream id, operation, first message): a new operation stream
OnRequest = Callable[[RpcConnection, int, str, Message], None]
OnStreamClosed = Callable[[RpcConnection, int], None]
OnDisconnect = Callable[[RpcConnection], None]


class RpcServer:
    def __init__(
        self,
        socket_path: str,
        *,
        authenticate: Authenticate,
        on_request: OnRequest,
        on_stream_closed: OnStreamClosed,
        on_disconnect: OnDisconnect,
    ) -> None:
        self.socket_path = socket_path
        self._authenticate = authenticate
        self._on_request = on_request
        self._on_stream_closed = on_stream_closed
        self._on_disconnect = on_disconnect
        self._lock = threading.Lock()
        self._connections: dict[int, RpcConnection] = {}
        self._next_number = 1
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = threading.Event()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def connections(self) -> list[RpcConnection]:
        with self._lock:
            return [c for c in self._connections.values() if not c.closed.is_set()]

    def start(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.socket_path)
            listener.listen(16)
            listener.settimeout(0.5)
            self._listener = listener
            self._running.set()
            self._accept_thread = threading.Thread(
                target=self._accept_loop, args=(listener,), name="rpc-accept", daemon=True
            )
            self._accept_thread.start()

    def stop(self) -> None:
        """Stop listening (the socket file goes away) and drop every connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            thread, self._accept_thread = self._accept_thread, None
            self._running.clear()
        if listener is not None:
            # shutdown() wakes a thread blocked in accept() on Linux; the timeout covers the rest
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if thread is not None:
            thread.join(timeout=2.0)
        if listener is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self.drop_connections()

    def drop_connections(self) -> int:
        """Close every client connection now; returns how many there were."""
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for conn in connections:
            conn.close()
        return len(connections)

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    sock.close()
                    return
                conn = RpcConnection(sock, self._next_number)
                self._next_number += 1
                self._connections[conn.number] = conn
            threading.Thread(
                target=self._read_loop, args=(conn,), name=f"rpc-conn-{conn.number}",
                daemon=True,
            ).start()

    def _read_loop(self, conn: RpcConnection) -> None:
        decoder = Decoder()
        try:
            while not conn.closed.is_set():
                try:
                    data = conn.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                for message in decoder.feed(data):
                    if not self._handle(conn, message):
                        return
        except FramingError as exc:
            logger.warning("connection %d sent bad framing: %s", conn.number, exc)
            conn.send(rpc_message(MessageType.PROTOCOL_ERROR, payload=str(exc).encode()))
        finally:
            conn.close()
            with self._lock:
                self._connections.pop(conn.number, None)
            self._on_disconnect(conn)

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
            MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR
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
