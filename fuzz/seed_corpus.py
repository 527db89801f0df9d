#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*).

wire_decode and zmtp_handshake: each input starts with two selector bytes (limits, chunk
size; see dms_core::fuzzing), then wire bytes. control_frame: one DMS control frame
(docs/PROTOCOL.md §3), or a sequence of [selector, length, frame] messages for the
protocol state machine. service_path: path, pattern, endpoint or ACL policy text.
discovery_value: postcard-encoded registration and link records (docs/PROTOCOL.md §8). Run it
again after changing the seeds; the files are committed.
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


# ---- control_frame ---------------------------------------------------------------------

LOBBY = "/demo/cn/android/w1/g1/Lobby/lobby-1"
BATTLE = "/demo/cn/android/w1/g1/Battle/battle-1"
FUZZ_PEER = "/fuzz/cn/android/w1/g1/Lobby/lobby-1"  # the peer of dms_core::fuzzing's responder


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def control(command, flags=0, id_=0, fields=b"", source=LOBBY, version=1, hops=16, destination=0):
    src = fnv1a64(source.encode())
    return struct.pack(">BBBBQQQH", version, command, flags, hops, id_, src, destination, len(fields)) + fields


TRADE = "/demo/cn/android/w1/g1/Trade/trade-1"


def routed(origin, dest, flags=1, id_=7, hops=15, extra=b""):
    """A routed REQ (docs/PROTOCOL.md §3.5): origin and destination entries."""
    block = bytes([2, len(origin)]) + origin.encode() + bytes([3, len(dest)]) + dest.encode() + extra
    return control(5, flags=flags, id_=id_, fields=block, source=origin, hops=hops, destination=fnv1a64(dest.encode()))


def ready_fields(liveness, path):
    raw = path.encode()
    return struct.pack(">IIB", liveness, 0, len(raw)) + raw


def reason_fields(code, detail):
    raw = detail.encode() if isinstance(detail, str) else detail
    return struct.pack(">HB", code, len(raw)) + raw


def sequence(*messages):
    """[selector, length, frame] per message (see exercise_protocol)."""
    out = b""
    for selector, frame in messages:
        out += bytes([selector, len(frame)]) + frame
    return out


CONTROL = {
    "ready": control(1, fields=ready_fields(3000, LOBBY)),
    "ready-answer": control(1, fields=ready_fields(0, BATTLE), source=BATTLE),
    "ping": control(2, id_=1),
    "pong": control(3, id_=1, source=BATTLE),
    "req": control(5, flags=1, id_=7),
    "rep": control(6, id_=7, source=BATTLE),
    "rep-error": control(6, flags=4, id_=7, fields=reason_fields(16, "no handler"), source=BATTLE),
    "disconnect": control(4, fields=reason_fields(1, "bye"), source=BATTLE),
    "disconnect-control-chars": control(4, fields=reason_fields(1, "bye\n\x1b[31m")),
    "disconnect-not-utf8": control(4, fields=reason_fields(1, b"\xc3")),
    "broadcast": control(5, flags=2),
    "version-2": control(2, id_=1, version=2),
    "unknown-command": control(7),
    "truncated": control(1, fields=ready_fields(3000, LOBBY))[:40],
    "trailing": control(2, id_=1) + b"\x00",
    "body-past-frame": control(2, id_=1)[:28] + b"\xff\xff",
    "ready-bad-path": control(1, fields=ready_fields(1, "../x")),
    "routed-req": routed(LOBBY, TRADE),
    "routed-notify": routed(LOBBY, TRADE, flags=0, id_=0, hops=1),
    "routed-for-the-fuzz-node": routed(FUZZ_PEER, "/fuzz/cn/android/w1/g1/Battle/battle-1"),
    "routed-bad-hash": routed(LOBBY, TRADE)[:20] + b"\x00" * 8 + routed(LOBBY, TRADE)[28:],
    "routed-with-traceparent": routed(LOBBY, TRADE, extra=bytes([1, 55]) + b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    "session-routed": sequence(
        (0x00, control(1, fields=ready_fields(1000, FUZZ_PEER), source=FUZZ_PEER)),
        (0x00, routed(FUZZ_PEER, "/fuzz/cn/android/w1/g1/Battle/battle-1", id_=2)),
        (0x00, routed(FUZZ_PEER, TRADE, id_=3)),
    ),
    "session": sequence(
        (0x00, control(1, fields=ready_fields(1000, FUZZ_PEER), source=FUZZ_PEER)),
        (0x08, control(2, id_=1)),
        (0x02, control(5, flags=1, id_=1)),
        (0xF8, control(3, id_=9)),
        (0x00, control(4, fields=reason_fields(1, "bye"))),
    ),
    "session-ready-flag": sequence((0x01, control(5, id_=0)), (0x07, control(6, id_=3)), (0x01, control(2, id_=4))),
    "before-ready": sequence((0x00, control(5, flags=1, id_=1)), (0x00, control(2, id_=1))),
}


# ---- service_path ----------------------------------------------------------------------

PATHS = {
    "service": LOBBY,
    "cluster": "/demo/cn/android/w1/g1/Battle",
    "pattern": "/demo/cn/*/*/*/Lobby",
    "star": "*",
    "endpoint": "tcp://127.0.0.1:4000",
    "endpoint-quic": "quic://[::1]:7000",
    "dot-segment": "/demo/cn/android/w1/g1/../x",
    "long-segment": "/demo/cn/android/w1/g1/Lobby/" + "x" * 226,
    "policy": "allow connect,request from /demo/cn/*/*/*/Lobby to /demo/cn/android/w1/g1/Battle\n"
    "deny notify from * # comment\nallow * from /demo\n",
    "policy-bad": "allow fly from /x\ndeny\n",
    "not-utf8": b"/demo/\xff/android/w1/g1/Lobby/lobby-1",
}


# ---- discovery_value -------------------------------------------------------------------


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pstr(s):
    raw = s.encode() if isinstance(s, str) else s
    return varint(len(raw)) + raw


def registration(endpoints, bucket, targets, acl=None, version=1):
    out = bytes([version]) + varint(len(endpoints)) + b"".join(pstr(e) for e in endpoints)
    out += varint(bucket) + varint(len(targets)) + b"".join(pstr(t) for t in targets)
    if acl is None:
        return out + b"\x00"
    return out + b"\x01" + varint(len(acl)) + b"".join(pstr(p) for p in acl)


DISCOVERY = {
    "plain": registration(["tcp://127.0.0.1:41235"], 0, []),
    "targets": registration(["tcp://127.0.0.1:1", "quic://10.0.0.7:7000"], 3, ["/demo/cn/android/w1/g1/Battle"]),
    "acl": registration(["tcp+tls://10.0.0.7:7001"], 7, [], acl=["/demo/cn/*/*/*/Lobby", "*"]),
    "big-bucket": registration(["tcp://h:1"], 0xFFFFFFFF, []),
    "version-9": registration(["tcp://h:1"], 1, [], version=9),
    "bad-fields": registration(["no scheme", "x://"], 1, ["not/a/cluster"], acl=["/bad/../p"]),
    "not-utf8": registration([b"tcp://\xff"], 1, []),
    "huge-count": b"\x01" + varint(1 << 40),
    "truncated": registration(["tcp://127.0.0.1:41235"], 0, [])[:10],
}


def link_record(forwards, links, version=1):
    out = bytes([version, 1 if forwards else 0]) + varint(len(links))
    return out + b"".join(pstr(to) + varint(cost) for to, cost in links)


# Link records of the routing table (docs/PROTOCOL.md §8.7), read from etcd as well.
DISCOVERY.update({
    "links-broker": link_record(True, [(LOBBY, 300), (TRADE, 1)]),
    "links-empty": link_record(False, []),
    "links-cost-0": link_record(False, [(TRADE, 0)]),
    "links-bad-path": link_record(False, [("trade", 1)]),
    "links-huge-count": b"\x01\x00" + varint(1 << 40),
})


def write_plain(target, seeds):
    out = os.path.join(HERE, "corpus", target)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        raw = data.encode() if isinstance(data, str) else data
        with open(os.path.join(out, f"seed-{name}"), "wb") as f:
            f.write(raw)


write_plain("control_frame", CONTROL)
write_plain("service_path", PATHS)
write_plain("discovery_value", DISCOVERY)
