#!/usr/bin/env python3
"""A DMS peer in Python, written from docs/PROTOCOL.md alone (no look at the Rust code).

Usage: dms_peer.py ENDPOINT NODE_PATH

A pyzmq DEALER whose identity is its service path connects to the DMS node at ENDPOINT
(whose service path is NODE_PATH) and runs the script of `tests/python_peer.rs`:

  1. READY probe and the node's READY answer;
  2. PING 1, 2, 3 and their PONGs;
  3. a request to the node (REQ 41) and its reply;
  4. a request from the node, answered with b"pong-from-python";
  5. on a second connection (py-2): READY, then a control frame of version 2, which must
     be answered with DISCONNECT VERSION_MISMATCH and the link closed; 5b. the same on a
     third connection (py-3) without READY first;
  6. DISCONNECT SHUTDOWN on the first connection, and the node closes the link.

Every field of every control frame received is checked. One line per step, a final line
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


def encode(command, source_path, flags=0, id_=0, fields=b"", version=VERSION):
    src = fnv1a64(source_path.encode())
    return HEADER.pack(version, command, flags, HOP_LIMIT, id_, src, 0, len(fields)) + fields


def ready_fields(liveness_ms, path):
    raw = path.encode()
    return struct.pack(">IIB", liveness_ms, 0, len(raw)) + raw


def reason_fields(code, detail):
    raw = detail.encode()
    return struct.pack(">HB", code, len(raw)) + raw


def text(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Mismatch(f"{what} is not UTF-8: {raw!r}") from None


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
        if command not in (REQ, REP):
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


def run(endpoint, node_path):
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
        raise SystemExit(f"usage: {sys.argv[0]} ENDPOINT NODE_PATH")
    try:
        run(sys.argv[1], sys.argv[2])
    except Mismatch as e:
        raise SystemExit(f"protocol mismatch: {e}") from None
    print("ok", flush=True)


if __name__ == "__main__":
    main()
