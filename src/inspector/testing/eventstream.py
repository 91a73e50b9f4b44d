"""AWS event-stream framing, the wire format of Greengrass IPC: pure encode/decode, no I/O.

A message is (big-endian)
``[total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]``.
Both CRCs are plain CRC-32: ``prelude_crc`` covers the first 8 bytes, ``message_crc`` everything
before it. A header is ``[name_len u8][name][type u8][value]``.
"""

from __future__ import annotations

import enum
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PRELUDE_LEN = 12  # total_len, headers_len, prelude_crc
MIN_MESSAGE_LEN = PRELUDE_LEN + 4  # an empty message: prelude + message_crc
# The limits aws-c-event-stream enforces; a bigger message is a protocol error there too.
MAX_MESSAGE_LEN = 16 * 1024 * 1024
MAX_HEADERS_LEN = 128 * 1024
MAX_HEADER_NAME_LEN = 127
MAX_HEADER_VALUE_LEN = 32767


class FramingError(ValueError):
    """Bytes that are not a valid event-stream message (bad CRC, lengths, header type)."""


class HeaderType(enum.IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8  # int64 milliseconds since the epoch
    UUID = 9


HeaderValue = bool | int | bytes | str | uuid.UUID

_INT_FORMATS = {
    HeaderType.BYTE: ">b",
    HeaderType.INT16: ">h",
    HeaderType.INT32: ">i",
    HeaderType.INT64: ">q",
    HeaderType.TIMESTAMP: ">q",
}


@dataclass(frozen=True)
class Header:
    name: str
    value: HeaderValue
    type: HeaderType

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, value, HeaderType.STRING)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, value, HeaderType.INT32)

    @classmethod
    def boolean(cls, name: str, value: bool) -> Header:
        return cls(name, value, HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE)


@dataclass(frozen=True)
class Message:
    headers: Sequence[Header] = field(default_factory=tuple)
    payload: bytes = b""

    def header(self, name: str) -> HeaderValue | None:
        """The value of the first header called ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for header in self.headers:
            if header.name.lower() == lowered:
                return header.value
        return None


def encode_header(header: Header) -> bytes:
    name = header.name.encode("utf-8")
    if not 0 < len(name) <= MAX_HEADER_NAME_LEN:
        raise FramingError(f"header name {header.name!r}: length must be 1..{MAX_HEADER_NAME_LEN}")
    out = bytearray([len(name)]) + name + bytes([header.type])
    value = header.value
    if header.type in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        pass  # the type carries the value
    elif header.type in _INT_FORMATS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FramingError(f"header {header.name!r}: {header.type.name} needs an int")
        try:
            out += struct.pack(_INT_FORMATS[header.type], value)
        except struct.error as exc:
            raise FramingError(
                f"header {header.name!r}: {value} does not fit {header.type.name}"
            ) from exc
    elif header.type in (HeaderType.BYTES, HeaderType.STRING):
        if header.type is HeaderType.STRING and isinstance(value, str):
            raw = value.encode("utf-8")
        elif header.type is HeaderType.BYTES and isinstance(value, bytes | bytearray):
            raw = bytes(value)
        else:
            raise FramingError(f"header {header.name!r}: wrong value type for {header.type.name}")
        if len(raw) > MAX_HEADER_VALUE_LEN:
            raise FramingError(f"header {header.name!r}: value longer than {MAX_HEADER_VALUE_LEN}")
        out += struct.pack(">H", len(raw)) + raw
    elif header.type is HeaderType.UUID:
        if not isinstance(value, uuid.UUID):
            raise FramingError(f"header {header.name!r}: UUID needs a uuid.UUID")
        out += value.bytes
    else:  # pragma: no cover - HeaderType is closed
        raise FramingError(f"header {header.name!r}: unknown type {header.type}")
    return bytes(out)


def encode_message(message: Message) -> bytes:
    headers = b"".join(encode_header(h) for h in message.headers)
    if len(headers) > MAX_HEADERS_LEN:
        raise FramingError(f"headers are {len(headers)} bytes, over {MAX_HEADERS_LEN}")
    total = MIN_MESSAGE_LEN + len(headers) + len(message.payload)
    if total > MAX_MESSAGE_LEN:
        raise FramingError(f"message is {total} bytes, over {MAX_MESSAGE_LEN}")
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + message.payload
    return body + struct.pack(">I", zlib.crc32(body))


def decode_headers(raw: bytes) -> list[Header]:
    headers: list[Header] = []
    pos = 0
    while pos < len(raw):
        name_len = raw[pos]
        pos += 1
        if name_len == 0 or pos + name_len + 1 > len(raw):
            raise FramingError("truncated header name")
        try:
            name = raw[pos:pos + name_len].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FramingError("header name is not UTF-8") from exc
        pos += name_len
        try:
            htype = HeaderType(raw[pos])
        except ValueError as exc:
            raise FramingError(f"header {name!r}: unknown type {raw[pos]}") from exc
        pos += 1
        value: HeaderValue
        if htype is HeaderType.BOOL_TRUE:
            value = True
        elif htype is HeaderType.BOOL_FALSE:
            value = False
        elif htype in _INT_FORMATS:
            fmt = _INT_FORMATS[htype]
            size = struct.calcsize(fmt)
            if pos + size > len(raw):
                raise FramingError(f"header {name!r}: truncated {htype.name}")
            (value,) = struct.unpack_from(fmt, raw, pos)
            pos += size
        elif htype in (HeaderType.BYTES, HeaderType.STRING):
            if pos + 2 > len(raw):
                raise FramingError(f"header {name!r}: truncated length")
            (length,) = struct.unpack_from(">H", raw, pos)
            pos += 2
            if pos + length > len(raw):
                raise FramingError(f"header {name!r}: truncated value")
            chunk = raw[pos:pos + length]
            pos += length
            if htype is HeaderType.STRING:
                try:
                    value = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FramingError(f"header {name!r}: string is not UTF-8") from exc
            else:
                value = bytes(chunk)
        else:  # UUID
            if pos + 16 > len(raw):
                raise FramingError(f"header {name!r}: truncated UUID")
            value = uuid.UUID(bytes=bytes(raw[pos:pos + 16]))
            pos += 16
        headers.append(Header(name, value, htype))
    return headers


def _check_prelude(prelude: bytes) -> tuple[int, int]:
    total, headers_len, prelude_crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != prelude_crc:
        raise FramingError("prelude CRC mismatch")
    if not MIN_MESSAGE_LEN <= total <= MAX_MESSAGE_LEN:
        raise FramingError(f"total length {total} out of range")
    if headers_len > min(MAX_HEADERS_LEN, total - MIN_MESSAGE_LEN):
        raise FramingError(f"headers length {headers_len} out of range")
    return total, headers_len


def decode_message(data: bytes) -> Message:
    """Decode exactly one message; trailing or missing bytes are an error."""
    if len(data) < MIN_MESSAGE_LEN:
        raise FramingError(f"{len(data)} bytes is shorter than a message")
    total, headers_len = _check_prelude(bytes(data[:PRELUDE_LEN]))
    if total != len(data):
        raise FramingError(f"total length says {total} bytes, got {len(data)}")
    (message_crc,) = struct.unpack_from(">I", data, total - 4)
    if zlib.crc32(data[:total - 4]) != message_crc:
        raise FramingError("message CRC mismatch")
    headers = decode_headers(bytes(data[PRELUDE_LEN:PRELUDE_LEN + headers_len]))
    return Message(tuple(headers), bytes(data[PRELUDE_LEN + headers_len:total - 4]))


class Decoder:
    """Incremental decoder: feed it socket reads, iterate the complete messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        self._buffer += data
        while len(self._buffer) >= PRELUDE_LEN:
            total, _ = _check_prelude(bytes(self._buffer[:PRELUDE_LEN]))
            if len(self._buffer) < total:
                return
            chunk = bytes(self._buffer[:total])
            del self._buffer[:total]
            yield decode_message(chunk)

    @property
    def pending(self) -> int:
        """Bytes received that do not form a complete message yet."""
        return len(self._buffer)


# --- the RPC layer on top of the framing (aws-c-event-stream's rpc protocol) ---

class MessageType(enum.IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag(enum.IntFlag):
    NONE = 0
    CONNECTION_ACCEPTED = 0x1
    TERMINATE_STREAM = 0x2


MESSAGE_TYPE = ":message-type"
MESSAGE_FLAGS = ":message-flags"
STREAM_ID = ":stream-id"


def rpc_message(
    message_type: MessageType,
    stream_id: int = 0,
    flags: int = MessageFlag.NONE,
    headers: Sequence[Header] = (),
    payload: bytes = b"",
) -> Message:
    """A message with the three INT32 headers every RPC message must carry, then ``headers``."""
    base = (
        Header.int32(MESSAGE_TYPE, int(message_type)),
        Header.int32(MESSAGE_FLAGS, int(flags)),
        Header.int32(STREAM_ID, stream_id),
    )
    return Message(base + tuple(headers), payload)


def rpc_fields(message: Message) -> tuple[MessageType, int, int]:
    """(message type, flags, stream id) of an RPC message; FramingError if any is missing."""
    values: dict[str, int] = {}
    for name in (MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID):
        found = [h for h in message.headers if h.name == name]
        if not found or found[0].type is not HeaderType.INT32:
            raise FramingError(f"missing INT32 header {name}")
        values[name] = int(found[0].value)
    try:
        message_type = MessageType(values[MESSAGE_TYPE])
    except ValueError as exc:
        raise FramingError(f"unknown message type {values[MESSAGE_TYPE]}") from exc
    return message_type, values[MESSAGE_FLAGS], values[STREAM_ID]
