"""What both emulators' servers share: a listening socket, an accept thread, and one thread and one
:class:`Connection` per client, all dropped by ``stop_listening()`` (the server going away).

Subclasses say how to bind (:meth:`SocketServer._bind`: a Unix socket for the nucleus, TCP for
StreamManager), what a connection object is, and how to serve one; the framing is theirs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Generic, TypeVar


class Connection:
    """One accepted client: whole sends under a lock (several threads answer on one connection)
    and an idempotent close."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.closed = threading.Event()
        self._write_lock = threading.Lock()

    def send_bytes(self, data: bytes) -> bool:
        """Send ``data`` whole; False if the connection is (now) closed."""
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


C = TypeVar("C", bound=Connection)


class SocketServer(Generic[C]):
    """Accept loop and connection registry. ``lock`` may be the subclass's own (re-entrant) lock
    when its state and the registry must change together."""

    thread_name = "server"

    def __init__(self, lock: threading.Lock | threading.RLock | None = None) -> None:
        self._lock = lock or threading.Lock()
        self._connections: dict[int, C] = {}
        self._next_number = 1
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = threading.Event()

    # ------------------------------------------------------------ for subclasses

    def _bind(self) -> socket.socket:
        """A bound, listening socket."""
        raise NotImplementedError

    def _new_connection(self, sock: socket.socket, number: int) -> C:
        raise NotImplementedError

    def _serve(self, conn: C) -> None:
        """Serve one client until it goes; the connection is closed and unregistered after."""
        raise NotImplementedError

    def _admit(self, sock: socket.socket) -> bool:
        """False hangs up on the client at once (a fault knob)."""
        return True

    def _disconnected(self, conn: C) -> None:
        """Called once the connection is closed and unregistered."""

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def connections(self) -> list[C]:
        with self._lock:
            return [c for c in self._connections.values() if not c.closed.is_set()]

    def start_listening(self) -> bool:
        """Bind and start accepting; False if already listening. Call with ``_lock`` held or
        not at all concurrently."""
        if self._listener is not None:
            return False
        listener = self._bind()
        listener.settimeout(0.5)
        self._listener = listener
        self._running.set()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener,),
            name=f"{self.thread_name}-accept",
            daemon=True,
        )
        self._accept_thread.start()
        return True

    def stop_listening(self) -> None:
        """Stop accepting and drop every connection (what a client sees when the server dies)."""
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
        self.drop_connections()

    def drop_connections(self) -> int:
        """Close every client connection now; returns how many there were."""
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for conn in connections:
            conn.close()
        return len(connections)

    # ------------------------------------------------------------ threads

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            if not self._admit(sock):
                sock.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped (and maybe restarted) meanwhile
                    sock.close()
                    return
                conn = self._new_connection(sock, self._next_number)
                self._next_number += 1
                self._connections[conn.number] = conn
            threading.Thread(
                target=self._run_connection,
                args=(conn,),
                name=f"{self.thread_name}-conn-{conn.number}",
                daemon=True,
            ).start()

    def _run_connection(self, conn: C) -> None:
        try:
            self._serve(conn)
        finally:
            conn.close()
            with self._lock:
                self._connections.pop(conn.number, None)
            self._disconnected(conn)
