#!/usr/bin/env python3
"""A real libzmq peer (through pyzmq) for the DMS interop tests.

Modes:
  dealer ENDPOINT          DEALER (identity py-dealer) connects to DMS, sends the script,
                           checks that DMS echoes every message back, in order.
  router-connect ENDPOINT  ROUTER (identity py-router) connects to DMS (identity dms-server),
                           sends the script addressed to dms-server, checks the echoes.
  router-bind              ROUTER (identity py-router-bound) binds a free loopback port,
                           prints it, then echoes every message of the script back to its
                           sender and checks that the sender was dms-client.
Exit status 0 and a final line "ok" on success; any mismatch raises.
"""
import struct
import sys

import zmq

TIMEOUT_MS = 20_000
BATCH = 200


def script():
    """The messages exchanged, as lists of frames (mirrored in libzmq_interop.rs)."""
    yield [b""]
    yield [b"", b"", b"x"]
    yield [b"a" * 256, b"b" * 1000]
    big = (bytes(range(251)) * ((4 << 20) // 251 + 1))[: 4 << 20]
    yield [big]
    for i in range(10_000):
        yield [struct.pack(">I", i)]


def socket(ctx, kind, identity):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.ROUTING_ID, identity)
    return s


def exchange(sock, prefix):
    """Sends the script in batches, checking each batch's echoes before the next."""
    messages = list(script())
    for start in range(0, len(messages), BATCH):
        batch = messages[start : start + BATCH]
        for msg in batch:
            sock.send_multipart(prefix + msg)
        for n, msg in enumerate(batch):
            got = sock.recv_multipart()
            if got != prefix + msg:
                raise SystemExit(f"echo {start + n} differs: {summary(got)} != {summary(prefix + msg)}")
    return len(messages)


def summary(frames):
    return [f[:16] + (b"..." if len(f) > 16 else b"") for f in frames]


def dealer(endpoint):
    ctx = zmq.Context()
    s = socket(ctx, zmq.DEALER, b"py-dealer")
    s.connect(endpoint)
    n = exchange(s, [])
    print(f"dealer exchanged {n} messages", flush=True)


def router_connect(endpoint):
    ctx = zmq.Context()
    s = socket(ctx, zmq.ROUTER, b"py-router")
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    s.connect(endpoint)
    # The ROUTER learns the DMS identity from its READY: wait for the handshake.
    if not mon.poll(TIMEOUT_MS):
        raise SystemExit("no handshake with DMS")
    mon.recv_multipart()
    n = exchange(s, [b"dms-server"])
    print(f"router exchanged {n} messages", flush=True)


def router_bind():
    ctx = zmq.Context()
    s = socket(ctx, zmq.ROUTER, b"py-router-bound")
    # A ROUTER silently drops messages to a peer at its send HWM (1000); MANDATORY makes the
    # echo wait for room instead, so the test sees every message.
    s.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    for n, msg in enumerate(script()):
        got = s.recv_multipart()
        if got[0] != b"dms-client":
            raise SystemExit(f"message {n} from {got[0]!r}, not dms-client")
        if got[1:] != msg:
            raise SystemExit(f"message {n} differs: {summary(got[1:])} != {summary(msg)}")
        s.send_multipart(got)
    print(f"router echoed {n + 1} messages", flush=True)


def main():
    mode = sys.argv[1]
    if mode == "dealer":
        dealer(sys.argv[2])
    elif mode == "router-connect":
        router_connect(sys.argv[2])
    elif mode == "router-bind":
        router_bind()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("ok", flush=True)


if __name__ == "__main__":
    main()
