#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*).

Each input starts with two selector bytes (limits, chunk size; see dms_core::fuzzing),
then wire bytes. Run it again after changing the seeds; the files are committed.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def message(*frames):
    return b"".join(frame(f, more=i + 1 < len(frames)) for i, f in enumerate(frames))


def command(name, data=b""):
    return frame(bytes([len(name)]) + name + data, command=True)


def ready(socket_type=b"DEALER", identity=b""):
    meta = b""
    for name, value in ((b"Socket-Type", socket_type), (b"Identity", identity)):
        meta += bytes([len(name)]) + name + struct.pack(">I", len(value)) + value
    return command(b"READY", meta)


GREETING = b"\xff" + b"\x00" * 7 + b"\x01" + b"\x7f\x03\x01" + b"NULL" + b"\x00" * 16 + b"\x00" * 32

WIRE = {
    "single": message(b"hello"),
    "multi": message(b"", b"a", b"b" * 300),
    "ping": command(b"PING", b"\x00\x1e" + b"ctx") + command(b"PONG", b"ctx"),
    "error": command(b"ERROR", b"\x04oops"),
    "huge-long": b"\x02" + struct.pack(">Q", 1 << 30),
    "max-long": b"\x03" + b"\xff" * 8,
    "many-frames": message(*([b"x"] * 80)),
    "reserved": b"\x08\x00",
    "command-more": b"\x05\x00",
    "command-inside": frame(b"a", more=True) + command(b"PONG"),
}

HANDSHAKE = {
    "dealer": GREETING + ready() + message(b"hi"),
    "router-identity": GREETING + ready(b"ROUTER", b"peer-1") + message(b"", b"x"),
    "zmtp30": GREETING[:11] + b"\x00" + GREETING[12:] + ready(b"REQ"),
    "bad-version": GREETING[:10] + b"\x02" + GREETING[11:],
    "curve": GREETING[:12] + b"CURVE" + b"\x00" * 15 + GREETING[32:],
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "pub": GREETING + ready(b"PUB"),
    "refused": GREETING + command(b"ERROR", b"\x07go away"),
    "huge-ready": GREETING + b"\x06" + struct.pack(">Q", 1 << 30),
}


def write(target, seeds):
    out = os.path.join(HERE, "corpus", target)
    os.makedirs(out, exist_ok=True)
    for name, wire in seeds.items():
        for limits, chunk in ((0xFF, 16), (0x05, 0), (0x40, 3)):
            path = os.path.join(out, f"seed-{name}-{limits:02x}-{chunk}")
            with open(path, "wb") as f:
                f.write(bytes([limits, chunk]) + wire)


write("wire_decode", WIRE)
write("zmtp_handshake", HANDSHAKE)
