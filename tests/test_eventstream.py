"""Event-stream framing: table tests, and cross-checks against awscrt's own encoder."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest

from inspector.testing.eventstream import (
    Decoder,
    FramingError,
    Header,
    HeaderType,
    Message,
    MessageFlag,
    MessageType,
    decode_headers,
    decode_message,
    encode_header,
    encode_message,
    rpc_fields,
    rpc_message,
)

U = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")

HEADER_TABLE = [
    (Header("t", True, HeaderType.BOOL_TRUE), b"\x01t\x00"),
    (Header("f", False, HeaderType.BOOL_FALSE), b"\x01f\x01"),
    (Header("b", -2, HeaderType.BYTE), b"\x01b\x02\xfe"),
    (Header("s", 258, HeaderType.INT16), b"\x01s\x03\x01\x02"),
    (Header("i", -1, HeaderType.INT32), b"\x01i\x04\xff\xff\xff\xff"),
    (Header("l", 1 << 40, HeaderType.INT64), b"\x01l\x05" + struct.pack(">q", 1 << 40)),
    (Header("y", b"\x00\x01", HeaderType.BYTES), b"\x01y\x06\x00\x02\x00\x01"),
    (Header("str", "hé", HeaderType.STRING), b"\x03str\x07\x00\x03h\xc3\xa9"),
    (Header("ts", 1700000000000, HeaderType.TIMESTAMP),
     b"\x02ts\x08" + struct.pack(">q", 1700000000000)),
    (Header("u", U, HeaderType.UUID), b"\x01u\x09" + U.bytes),
]


@pytest.mark.parametrize(("header", "wire"), HEADER_TABLE, ids=lambda v: getattr(v, "name", ""))
def test_header_round_trip(header: Header, wire: bytes) -> None:
    assert encode_header(header) == wire
    assert decode_headers(wire) == [header]


@pytest.mark.parametrize(
    "header",
    [
        Header("b", 128, HeaderType.BYTE),
        Header("s", 1 << 15, HeaderType.INT16),
        Header("i", 1 << 31, HeaderType.INT32),
        Header("i", True, HeaderType.INT32),
        Header("x", b"raw", HeaderType.STRING),
        Header("x", "text", HeaderType.BYTES),
        Header("x", "x" * 32768, HeaderType.STRING),
        Header("", "empty name", HeaderType.STRING),
        Header("n" * 128, "long name", HeaderType.STRING),
        Header("u", "not a uuid", HeaderType.UUID),
    ],
)
def test_header_encode_rejects(header: Header) -> None:
    with pytest.raises(FramingError):
        encode_header(header)


def test_empty_message_is_16_bytes_with_both_crcs() -> None:
    wire = encode_message(Message())
    assert len(wire) == 16
    total, headers_len, prelude_crc = struct.unpack(">III", wire[:12])
    assert (total, headers_len) == (16, 0)
    assert prelude_crc == zlib.crc32(wire[:8])
    assert struct.unpack(">I", wire[12:])[0] == zlib.crc32(wire[:12])


def test_message_round_trip() -> None:
    message = Message((Header.string(":content-type", "application/json"),
                       Header.int32(":stream-id", 7)), b'{"a": 1}')
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("position", "reason"),
    [(0, "prelude CRC"), (9, "prelude CRC"), (14, "message CRC"), (-1, "message CRC")],
)
def test_corrupt_byte_is_detected(position: int, reason: str) -> None:
    wire = bytearray(encode_message(Message((Header.string("k", "v"),), b"payload")))
    wire[position] ^= 0x40
    with pytest.raises(FramingError, match=reason):
        decode_message(bytes(wire))


def test_length_mismatch_and_short_input() -> None:
    wire = encode_message(Message(payload=b"abc"))
    with pytest.raises(FramingError):
        decode_message(wire + b"x")
    with pytest.raises(FramingError):
        decode_message(wire[:10])


def test_unknown_header_type_is_rejected() -> None:
    with pytest.raises(FramingError, match="unknown type"):
        decode_headers(b"\x01k\x0a")


def test_decoder_reassembles_byte_by_byte() -> None:
    messages = [Message(payload=b"one"), Message((Header.boolean("ok", True),), b""),
                Message(payload=b"x" * 1000)]
    wire = b"".join(encode_message(m) for m in messages)
    decoder = Decoder()
    out: list[Message] = []
    for i in range(len(wire)):
        out.extend(decoder.feed(wire[i:i + 1]))
    assert out == messages
    assert decoder.pending == 0


def test_rpc_message_carries_the_three_int32_headers() -> None:
    message = rpc_message(MessageType.CONNECT_ACK, 0, MessageFlag.CONNECTION_ACCEPTED)
    assert rpc_fields(decode_message(encode_message(message))) == (MessageType.CONNECT_ACK, 1, 0)
    with pytest.raises(FramingError, match=":stream-id"):
        rpc_fields(Message((Header.int32(":message-type", 0), Header.int32(":message-flags", 0))))


def test_matches_awscrt_header_binding() -> None:
    """Our wire bytes decode to the same values awscrt's Header classes describe."""
    from awscrt.eventstream import Header as CrtHeader

    crt = [CrtHeader.from_int32(":stream-id", 3), CrtHeader.from_string("operation", "x"),
           CrtHeader.from_bool("flag", False), CrtHeader.from_uuid("u", U)]
    ours = [Header(h.name, h.value, HeaderType(int(h.type))) for h in crt]
    assert decode_headers(b"".join(encode_header(h) for h in ours)) == ours
