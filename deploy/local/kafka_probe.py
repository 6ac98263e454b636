#!/usr/bin/env python3
"""Cheap readiness + topic check for deploy/local (no JVM: ~50 ms instead of ~2 s).

    kafka_probe.py HOST:PORT TIMEOUT_S TOPIC...

Sends one Metadata request (v4, the oldest version Kafka 4 still serves) for TOPIC... and
exits 0 when the broker answered and every TOPIC exists with a leader on every partition,
1 when the broker answered but some TOPIC is missing or has no leader (the caller then
creates topics with the JVM tool), 2 when the broker did not answer within TIMEOUT_S or the
answer was not understood (the caller falls back to the JVM tool). Retries until TIMEOUT_S.
"""

import socket
import struct
import sys
import time

METADATA, VERSION = 3, 4
UNKNOWN_TOPIC_OR_PARTITION = 3


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(topics, correlation_id):
    header = struct.pack(">hhi", METADATA, VERSION, correlation_id) + string("lastseen-probe")
    body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
    body += b"\x00"  # allow_auto_topic_creation = false
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def array(self, item):
        return [item() for _ in range(self.take(">i"))]


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed")
        out += chunk
    return out


def metadata(addr, topics, correlation_id, timeout):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request(topics, correlation_id))
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        r = Reader(recv_exact(s, size))
    if r.take(">i") != correlation_id:
        raise ValueError("unexpected correlation id")
    r.take(">i")  # throttle_time_ms
    r.array(lambda: (r.take(">i"), r.string(), r.take(">i"), r.string()))  # brokers
    r.string()  # cluster_id
    r.take(">i")  # controller_id

    def partition():
        error, _index, leader = r.take(">h"), r.take(">i"), r.take(">i")
        r.array(lambda: r.take(">i"))  # replicas
        r.array(lambda: r.take(">i"))  # isr
        return error == 0 and leader >= 0

    def topic():
        error, name, _internal = r.take(">h"), r.string(), r.take(">b")
        parts = r.array(partition)
        if error == UNKNOWN_TOPIC_OR_PARTITION:
            return name, "absent"
        return name, "ok" if error == 0 and parts and all(parts) else "leaderless"

    return dict(r.array(topic))


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    addr, timeout, topics = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            got = metadata(addr, topics, attempt, max(0.5, min(3.0, deadline - time.monotonic())))
            absent = [t for t in topics if got.get(t, "absent") == "absent"]
            leaderless = [t for t in topics if got.get(t) == "leaderless"]
            if absent:
                print("absent: " + " ".join(absent), file=sys.stderr)
                return 1
            if not leaderless:
                return 0
            # A broker still electing leaders: ask again, briefly.
            if time.monotonic() + 0.1 >= deadline or attempt >= 20:
                print("leaderless: " + " ".join(leaderless), file=sys.stderr)
                return 1
        except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
            if time.monotonic() + 0.1 >= deadline:
                print(f"kafka at {addr} not answering: {e}", file=sys.stderr)
                return 2
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
