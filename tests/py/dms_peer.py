#!/usr/bin/env python3
"""A DMS peer in Python, written from docs/PROTOCOL.md alone (no look at the Rust code).

Usage: dms_peer.py NODE_PATH RECORD_HEX

RECORD_HEX is the value discovery holds under the key NODE_PATH: the node's record
(§8.2), in hex. The peer decodes it, picks the endpoint a TCP-only dialler picks (§8.5),
and a pyzmq DEALER whose identity is its service path connects there and runs the script
of `tests/python_peer.rs`:

  0. the record decoded, the endpoint chosen;
  1. READY probe and the node's READY answer;
  2. PING 1, 2, 3 and their PONGs;
  3. a request to the node (REQ 41) and its reply;
  4. a request from the node, answered with b"pong-from-python";
  5. on a second connection (py-2): READY, then a control frame of version 2, which must
     be answered with DISCONNECT VERSION_MISMATCH and the link closed; 5b. the same on a
     third connection (py-3) without READY first;
  6. DISCONNECT SHUTDOWN on the first connection, and the node closes the link.

On import it checks its implementation of §4.2 (service paths) and §8 (record, bucket
key, dispatch hash) against the document's golden vectors. Every field of every control
frame received is checked. One line per step, a final line
"ok" and exit status 0 on success; any mismatch exits non-zero with a message.
"""
import struct
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

# --- The control frame (PROTOCOL.md §3) ---------------------------------------------------

VERSION = 1
READY, PING, PONG, DISCONNECT, REQ, REP = 1, 2, 3, 4, 5, 6
COMMANDS = {READY: "READY", PING: "PING", PONG: "PONG", DISCONNECT: "DISCONNECT", REQ: "REQ", REP: "REP"}
EXPECT_REPLY, BROADCAST, ERROR = 0x01, 0x02, 0x04
HOP_LIMIT = 16

SHUTDOWN, ACCESS_DENIED, PROTOCOL_VIOLATION, TIMEOUT, VERSION_MISMATCH = 1, 2, 3, 4, 5

# version, command, flags, hop limit, id, source, destination, body length
HEADER = struct.Struct(">BBBBQQQH")
assert HEADER.size == 30

PATH = "/demo/cn/android/w1/g1/Lobby/py-1"
SECOND_PATH = "/demo/cn/android/w1/g1/Lobby/py-2"
THIRD_PATH = "/demo/cn/android/w1/g1/Lobby/py-3"
LIVENESS_MS = 5000  # how long the node may hear nothing from us before it declares us dead
PING_EVERY_S = 1.0  # we are the requester: we drive the heartbeats
TIMEOUT_MS = 10_000  # longest wait for any one frame
BYE = "py-1 done"


class Mismatch(Exception):
    """The node did something the protocol document does not allow."""


class LinkClosed(Mismatch):
    """The node closed the link."""


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 (§3.2)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# The golden vectors of §3.2.
assert fnv1a64(b"/demo/cn/android/w1/g1/Lobby/lobby-1") == 0x48E2902F05E856DB
assert fnv1a64(b"/demo/cn/android/w1/g1/Battle/battle-1") == 0xCE1FE9CD90A09A3D


def text(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Mismatch(f"{what} is not UTF-8: {raw!r}") from None


# --- Service paths (§4.2) ----------------------------------------------------------------

SEGMENT_CHARS = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def is_path(path: str, segments: int) -> bool:
    """A service path (7 segments) or a cluster path (6), by the rules of §4.2."""
    raw = path.encode()
    if not raw.startswith(b"/") or len(raw) > 255:
        return False
    parts = raw[1:].split(b"/")
    return len(parts) == segments and all(
        1 <= len(p) <= 64 and set(p) <= SEGMENT_CHARS and p not in (b".", b"..") for p in parts
    )


assert is_path("/demo/cn/android/w1/g1/Battle/battle-1", 7)
assert is_path("/demo/cn/android/w1/g1/Battle", 6)
for bad in ["demo/cn/android/w1/g1/Battle/b", "/demo/cn/android/w1/g1/Battle", "/a/b/c/d/e/f/",
            "/a/b/c/../e/f/g", "/a/b/c/d/e/f/g h", "/a/b/c/d/e/f/\0", "/a/b/c/d/e/f/" + "x" * 65,
            "/a/b/c/d/e/f/\u00e9", "/" + "/".join(["x" * 40] * 7)]:
    assert not is_path(bad, 7), bad


# --- Discovery (§8) -----------------------------------------------------------------------


def bucket_key(cluster: str, bucket: int) -> str:
    """§8.1: the key of a bucket claim."""
    return f"/@dms/buckets{cluster}/{bucket}"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Reader:
    """postcard as §8.2 describes it."""

    def __init__(self, raw: bytes):
        self.raw, self.at = raw, 0

    def byte(self) -> int:
        check(self.at < len(self.raw), "record cut short")
        self.at += 1
        return self.raw[self.at - 1]

    def varint(self, max_bytes: int) -> int:
        value = 0
        for i in range(max_bytes):
            b = self.byte()
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                check(max_bytes != 5 or i < 4 or b <= 0x0F, "u32 varint overflows")
                return value
        raise Mismatch("varint too long")

    def string(self) -> str:
        n = self.varint(10)
        check(self.at + n <= len(self.raw), "record cut short")
        self.at += n
        return text(self.raw[self.at - n : self.at], "record string")

    def strings(self) -> list:
        return [self.string() for _ in range(self.varint(10))]


def encode_record(endpoints, bucket, targets, acl):
    def strings(items):
        return varint(len(items)) + b"".join(varint(len(x.encode())) + x.encode() for x in items)

    tail = b"\x00" if acl is None else b"\x01" + strings(acl)
    return b"\x01" + strings(endpoints) + varint(bucket) + strings(targets) + tail


def decode_record(raw: bytes) -> dict:
    """§8.2; raises Mismatch on what a DMS reader refuses."""
    check(len(raw) <= 65536, f"record of {len(raw)} bytes")
    r = Reader(raw)
    check(r.byte() == 1, "record version is not 1")
    record = {"endpoints": r.strings(), "bucket": r.varint(5), "targets": r.strings()}
    tag = r.byte()
    check(tag in (0, 1), f"option tag {tag}")
    record["acl"] = r.strings() if tag == 1 else None
    return record  # bytes after the record are ignored


def choose_endpoint(endpoints, schemes=("tcp",)):
    """§8.5: the first endpoint of the first scheme we can dial that the record has."""
    for scheme in schemes:
        for endpoint in endpoints:
            head, sep, address = endpoint.partition("://")
            if sep and head == scheme and address:
                return endpoint
    return None


def jump_points(key: int, n: int):
    """§8.4: the key's jump points below n, in increasing order (0 first)."""
    p, k = 0, key
    while p < n:
        yield p
        k = (k * 2862933555777941757 + 1) & M64
        p = int(float(p + 1) * (float(1 << 31) / float((k >> 33) + 1)))


def jump(key: int, n: int) -> int:
    return max([0, *jump_points(key, n)])


def mix(key: int, b: int) -> int:
    z = key ^ ((b * 0x9E3779B97F4A7C15) & M64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def owner(key: int, live) -> int:
    """§8.4: the bucket among `live` that gets `key`."""
    live = set(live)
    points = [p for p in jump_points(key, max(live) + 1) if p in live]
    return points[-1] if points else max(live, key=lambda b: mix(key, b))


# The golden vectors of §8.
M64 = 0xFFFFFFFFFFFFFFFF
LOBBY_CLUSTER = "/demo/cn/android/w1/g1/Lobby"
RECORD_A = bytes.fromhex(
    "01 02 15 74 63 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a 34 31 32 33 35 14 71 75 69 63 3a 2f"
    " 2f 31 30 2e 30 2e 30 2e 37 3a 37 30 30 30 ac 02 01 1c 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64"
    " 72 6f 69 64 2f 77 31 2f 67 31 2f 4c 6f 62 62 79 01 01 1c 2f 64 65 6d 6f 2f 63 6e 2f 61 6e"
    " 64 72 6f 69 64 2f 77 31 2f 67 31 2f 4c 6f 62 62 79"
)
RECORD_B = bytes.fromhex("01 01 15 74 63 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a 34 31 32 33 35 00 00 00")
assert encode_record(["tcp://127.0.0.1:41235", "quic://10.0.0.7:7000"], 300, [LOBBY_CLUSTER], [LOBBY_CLUSTER]) == RECORD_A
assert encode_record(["tcp://127.0.0.1:41235"], 0, [], None) == RECORD_B
assert decode_record(RECORD_A) == {
    "endpoints": ["tcp://127.0.0.1:41235", "quic://10.0.0.7:7000"],
    "bucket": 300,
    "targets": [LOBBY_CLUSTER],
    "acl": [LOBBY_CLUSTER],
}
assert decode_record(RECORD_B + b"\xff")["bucket"] == 0
assert choose_endpoint(decode_record(RECORD_A)["endpoints"]) == "tcp://127.0.0.1:41235"
assert bucket_key("/demo/cn/android/w1/g1/Battle", 300).encode().hex(" ") == (
    "2f 40 64 6d 73 2f 62 75 63 6b 65 74 73 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f"
    " 77 31 2f 67 31 2f 42 61 74 74 6c 65 2f 33 30 30"
)
K = fnv1a64(b"player-42")
assert K == 0x63EF3200F2645191
assert [jump(K, n) for n in (1, 2, 3, 5, 10, 1000, 4096)] == [0, 1, 1, 4, 4, 616, 3085]
assert list(jump_points(K, 4096)) == [0, 1, 4, 616, 1079, 1356, 3001, 3085]
assert (jump(0, 1000), jump(1, 10), jump(42, 10), jump(M64, 10)) == (0, 6, 2, 9)
assert [mix(K, b) for b in range(8)] == [
    0x11B7242A7433A830, 0x62BC00D02FF93E38, 0xCBEC8BB46B7C3A7D, 0x19693D3AD045CC80,
    0xE050B2050689CE49, 0x027E2577253FE5FF, 0x2A08A2A8C610FBD5, 0x1708F06E8E51EFB9,
]
for live, expected in [((0, 1, 2, 3, 4), 4), ((0, 1, 2, 3), 1), ((0, 1, 3, 4), 4), ((0, 1, 2, 3, 5), 1),
                       ((0, 2, 3), 0), ((0, 700, 3085), 3085), ((2, 3), 2), ((5, 6, 7), 6)]:
    assert owner(K, live) == expected, (live, owner(K, live))


def encode(command, source_path, flags=0, id_=0, fields=b"", version=VERSION):
    src = fnv1a64(source_path.encode())
    return HEADER.pack(version, command, flags, HOP_LIMIT, id_, src, 0, len(fields)) + fields


def ready_fields(liveness_ms, path):
    raw = path.encode()
    return struct.pack(">IIB", liveness_ms, 0, len(raw)) + raw


def reason_fields(code, detail):
    raw = detail.encode()
    return struct.pack(">HB", code, len(raw)) + raw


def parse_ready(fields):
    check(len(fields) >= 9, f"READY fields too short: {fields.hex(' ')}")
    liveness, caps, path_len = struct.unpack_from(">IIB", fields)
    check(len(fields) == 9 + path_len, f"READY body length {len(fields)}, path_len {path_len}")
    return liveness, caps, text(fields[9:], "READY path")


def parse_reason(fields, what):
    check(len(fields) >= 3, f"{what} fields too short: {fields.hex(' ')}")
    code, detail_len = struct.unpack_from(">HB", fields)
    check(len(fields) == 3 + detail_len, f"{what} body length {len(fields)}, detail_len {detail_len}")
    return code, text(fields[3:], f"{what} detail")


class Frame:
    """A control frame from the node, with its payload frames; the header is checked."""

    def __init__(self, frames, node_path):
        check(len(frames) >= 1, "empty message")
        raw = frames[0]
        check(len(raw) >= HEADER.size, f"control frame of {len(raw)} bytes: {raw.hex(' ')}")
        (version, command, flags, hops, id_, source, destination, body_len) = HEADER.unpack_from(raw)
        self.command, self.flags, self.id = command, flags, id_
        self.fields = raw[HEADER.size :]
        self.payload = frames[1:]
        name = COMMANDS.get(command, f"command {command:#04x}")
        self.name = name
        check(version == VERSION, f"{name}: version {version}")
        check(command in COMMANDS, f"unknown command {command:#04x}")
        check(hops == HOP_LIMIT, f"{name}: hop limit {hops}")
        expected_source = fnv1a64(node_path.encode())
        check(source == expected_source, f"{name}: source {source:#018x}, expected {expected_source:#018x}")
        check(destination == 0, f"{name}: destination {destination:#018x}")
        check(body_len == len(self.fields), f"{name}: body length {body_len}, {len(self.fields)} bytes follow")
        allowed = {REQ: EXPECT_REPLY | BROADCAST, REP: ERROR}.get(command, 0)
        check(flags & ~allowed == 0, f"{name}: flags {flags:#04x}")
        if command in (PING, PONG, REQ) or (command == REP and not flags & ERROR):
            check(body_len == 0, f"{name}: body length {body_len}, expected 0")
        if command != REQ and not (command == REP and not flags & ERROR):
            check(not self.payload, f"{name}: unexpected payload frames {self.payload!r}")
        if command in (READY, DISCONNECT):
            check(id_ == 0, f"{name}: id {id_}")

    def __repr__(self):
        return f"{self.name}(flags={self.flags:#04x}, id={self.id}, fields={self.fields!r}, payload={self.payload!r})"


class Peer:
    """One link to the node: we connect, so we are the requester (§4)."""

    def __init__(self, ctx, endpoint, path, node_path):
        self.path, self.node_path = path, node_path
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, path.encode())  # identity = service path (§1.1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        # A link the node closed must stay closed (no silent redial) and what the node sent
        # before closing must stay readable. RECONNECT_IVL = -1 would not do: libzmq then
        # drops the unread messages of the link when it closes (a DISCONNECT followed by
        # the close was lost that way). A redial delay longer than this script does both.
        self.sock.setsockopt(zmq.RECONNECT_IVL, 600_000)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        self.closed = False
        self.sock.connect(endpoint)
        self.next_ping = 1
        self.last_sent = time.monotonic()
        self.requests = []  # REQs from the node, not handled yet

    def send(self, command, flags=0, id_=0, fields=b"", payload=(), version=VERSION):
        self.sock.send_multipart([encode(command, self.path, flags, id_, fields, version), *payload])
        self.last_sent = time.monotonic()

    def recv(self, timeout_ms=TIMEOUT_MS):
        """The next frame from the node, or None after `timeout_ms`. Raises `LinkClosed`
        once the node has closed the link and every frame it sent before was read."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not self.closed:
            remaining = int((deadline - time.monotonic()) * 1000)
            ready = dict(self.poller.poll(max(0, remaining)))
            if self.sock in ready:
                return Frame(self.sock.recv_multipart(), self.node_path)
            if self.monitor in ready:
                if recv_monitor_message(self.monitor)["event"] == zmq.EVENT_DISCONNECTED:
                    self.closed = True
            elif remaining <= 0:
                return None
        # What the node sent before closing is already queued (a short grace lets the
        # queue catch up with the monitor).
        if self.sock.poll(100):
            return Frame(self.sock.recv_multipart(), self.node_path)
        raise LinkClosed(f"the node closed the link of {self.path}")

    def next(self, what, timeout_ms=TIMEOUT_MS):
        """The next frame that is not a request from the node (those are queued for
        `serve_one`); fails after `timeout_ms` or on DISCONNECT."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            frame = self.recv(max(0, int((deadline - time.monotonic()) * 1000)))
            if frame is None:
                raise Mismatch(f"no {what} within {timeout_ms} ms")
            if frame.command == REQ:
                self.queue_request(frame)
            elif frame.command == PING:
                # Only the requester (us) sends PING (§4); answer it anyway.
                print(f"  note: the node sent PING {frame.id}", flush=True)
                self.send(PONG, id_=frame.id)
            elif frame.command == DISCONNECT and what != "DISCONNECT":
                code, detail = parse_reason(frame.fields, "DISCONNECT")
                raise Mismatch(f"DISCONNECT {code} {detail!r} while waiting for {what}")
            else:
                return frame

    def queue_request(self, frame):
        check(frame.flags == EXPECT_REPLY, f"REQ flags {frame.flags:#04x}, expected EXPECT_REPLY")
        check(all(r.id != frame.id for r in self.requests), f"REQ id {frame.id} reused while pending")
        self.requests.append(frame)

    def handshake(self, liveness_ms):
        """§4: our READY probe, then the node's READY answer."""
        self.send(READY, fields=ready_fields(liveness_ms, self.path))
        frame = self.next("READY answer")
        check(frame.command == READY, f"expected READY, got {frame!r}")
        check(frame.flags == 0, f"READY flags {frame.flags:#04x}")
        liveness, caps, path = parse_ready(frame.fields)
        check(liveness == 0, f"responder READY liveness_timeout_ms {liveness}, expected 0")
        check(caps == 0, f"READY capabilities {caps:#x}")
        check(is_path(path, 7), f"READY path {path!r} is not a service path (§4.2)")
        check(path == self.node_path, f"READY path {path!r}, expected {self.node_path!r}")
        return path

    def ping(self):
        """§5: PING with the next sequence number; returns it (the PONG is checked by `pong`)."""
        seq = self.next_ping
        self.next_ping += 1
        self.send(PING, id_=seq)
        return seq

    def pong(self, seq):
        frame = self.next(f"PONG {seq}")
        check(frame.command == PONG, f"expected PONG {seq}, got {frame!r}")
        check(frame.flags == 0 and frame.id == seq, f"PONG for PING {seq}: {frame!r}")

    def request(self, id_, payload):
        """§6: REQ with EXPECT_REPLY; returns the REP's payload frames."""
        self.send(REQ, flags=EXPECT_REPLY, id_=id_, payload=payload)
        frame = self.next(f"REP {id_}")
        check(frame.command == REP, f"expected REP {id_}, got {frame!r}")
        check(frame.id == id_, f"REP id {frame.id}, expected {id_}")
        if frame.flags & ERROR:
            code, detail = parse_reason(frame.fields, "REP error")
            raise Mismatch(f"REP {id_} is an error: {code} {detail!r}")
        return frame.payload

    def serve_one(self, answer, timeout_s=TIMEOUT_MS / 1000):
        """Waits for one request from the node, keeping the link alive with PINGs, and
        answers it with `answer(payload)`. Returns the request."""
        deadline = time.monotonic() + timeout_s
        waiting_pong = None
        while not self.requests:
            check(time.monotonic() < deadline, f"no REQ from the node within {timeout_s} s")
            if waiting_pong is None and time.monotonic() - self.last_sent >= PING_EVERY_S:
                waiting_pong = self.ping()
            frame = self.recv(100)
            if frame is None:
                continue
            if frame.command == REQ:
                self.queue_request(frame)
            elif frame.command == PONG and frame.id == waiting_pong and frame.flags == 0:
                waiting_pong = None
            elif frame.command == PING:
                self.send(PONG, id_=frame.id)
            else:
                raise Mismatch(f"while waiting for a REQ: {frame!r}")
        if waiting_pong is not None:
            self.pong(waiting_pong)
        req = self.requests.pop(0)
        self.send(REP, id_=req.id, payload=answer(req.payload))
        return req

    def disconnect(self, code, detail):
        """§6: DISCONNECT is terminal; the node closes the link."""
        self.send(DISCONNECT, fields=reason_fields(code, detail))

    def expect_closed(self):
        """§6: after a DISCONNECT the node sends nothing more and closes the link."""
        try:
            frame = self.recv()
        except LinkClosed:
            return
        raise Mismatch(f"after DISCONNECT: {frame!r}" if frame else "the node did not close the link")

    def close(self):
        self.sock.disable_monitor()
        self.monitor.close()
        self.sock.close()


def refused_version(peer):
    """§3: a control frame of another version gets DISCONNECT VERSION_MISMATCH, in any
    session state, and the link is closed. Returns the detail."""
    peer.send(PING, id_=1, version=2)
    frame = peer.next("DISCONNECT")
    check(frame.command == DISCONNECT, f"expected DISCONNECT after version 2, got {frame!r}")
    check(frame.flags == 0, f"DISCONNECT flags {frame.flags:#04x}")
    code, detail = parse_reason(frame.fields, "DISCONNECT")
    check(code == VERSION_MISMATCH, f"DISCONNECT code {code} {detail!r}, expected VERSION_MISMATCH")
    check(detail != "", "DISCONNECT VERSION_MISMATCH without a detail")
    peer.expect_closed()
    peer.close()
    return detail


def step(text_):
    print(text_, flush=True)


def run(node_path, record_hex):
    check(is_path(node_path, 7), f"{node_path!r} is not a service path (§4.2)")
    record = decode_record(bytes.fromhex(record_hex))
    endpoint = choose_endpoint(record["endpoints"])
    check(endpoint is not None, f"no tcp:// endpoint in {record['endpoints']!r}")
    step(f"0 record of {node_path}: bucket {record['bucket']}, endpoints {record['endpoints']}, dialling {endpoint}")
    ctx = zmq.Context()
    try:
        first = Peer(ctx, endpoint, PATH, node_path)
        first.handshake(LIVENESS_MS)
        step(f"1 READY exchanged with {node_path}")

        seqs = [first.ping() for _ in range(3)]
        for seq in seqs:
            first.pong(seq)
        step(f"2 PING/PONG {seqs}")

        payload = first.request(41, [b"hello", b""])
        expected = [b"hello", b"", node_path.encode()]
        check(payload == expected, f"REP 41 payload {payload!r}, expected {expected!r}")
        step(f"3 REQ 41 answered with {payload!r}")

        req = first.serve_one(lambda _payload: [b"pong-from-python"])
        check(req.payload == [b"from-dms"], f"REQ from the node carries {req.payload!r}")
        step(f"4 REQ {req.id} from the node answered")

        second = Peer(ctx, endpoint, SECOND_PATH, node_path)
        second.handshake(LIVENESS_MS)
        detail = refused_version(second)
        step(f"5 version 2 after READY refused: DISCONNECT VERSION_MISMATCH {detail!r}, link closed")

        third = Peer(ctx, endpoint, THIRD_PATH, node_path)
        detail = refused_version(third)
        step(f"5b version 2 before READY refused: DISCONNECT VERSION_MISMATCH {detail!r}, link closed")

        first.disconnect(SHUTDOWN, BYE)
        first.expect_closed()
        first.close()
        step(f"6 DISCONNECT {SHUTDOWN} {BYE!r} sent, link closed")
    finally:
        ctx.destroy(linger=0)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} NODE_PATH RECORD_HEX")
    try:
        run(sys.argv[1], sys.argv[2])
    except Mismatch as e:
        raise SystemExit(f"protocol mismatch: {e}") from None
    print("ok", flush=True)


if __name__ == "__main__":
    main()
