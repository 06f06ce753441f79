"""bench/relay.py as a serial line: bytes per second both ways, a hold per packet."""
from __future__ import annotations

import socket
import threading
import time

from bench.relay import LINKS, Relay, parse_link


def checksum(data: bytes) -> bytes:
    return b"%02x" % (sum(data) & 0xFF)


def fake_stub(reply_size: int) -> tuple[socket.socket, threading.Thread]:
    """A gdbstub that answers each packet with `reply_size` bytes of hex at once."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                if b"#" in data:
                    body = b"00" * (reply_size // 2)
                    conn.sendall(b"+$" + body + b"#" + checksum(body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def round_trip(relay: Relay, request: bytes, reply_size: int) -> float:
    with socket.create_connection(("127.0.0.1", relay.port)) as gdb:
        started = time.monotonic()
        gdb.sendall(b"$" + request + b"#" + checksum(request))
        got = b""
        while not got.endswith(b"#" + checksum(b"00" * (reply_size // 2))):
            got += gdb.recv(65536)
        return time.monotonic() - started


def test_serial_line_charges_bytes_both_ways():
    stub, _ = fake_stub(4096)               # a 2 KiB read: 4 KiB of hex
    with Relay(stub.getsockname(), delay_ms=0.5, bytes_per_s=100_000) as relay:
        request = b"mffffffff81000000,800"
        seconds = round_trip(relay, request, 4096)
        counters = relay.snapshot()
    wire = (len(request) + 4 + 4096 + 6) / 100_000        # ~42 ms at 100 kB/s
    assert wire + 0.0005 <= seconds < wire + 0.5
    assert counters.memory_reads == 1 and counters.memory_read_bytes == 0x800
    stub.close()


def test_tcp_link_leaves_replies_alone():
    stub, _ = fake_stub(4096)
    with Relay(stub.getsockname(), delay_ms=0.0) as relay:
        seconds = round_trip(relay, b"mffffffff81000000,800", 4096)
    assert seconds < 0.2         # nothing held: loopback time only
    stub.close()


def test_links_by_name_or_delay():
    assert parse_link("serial115200").bytes_per_s == 11520
    assert parse_link("1").delay_ms == 1.0 and parse_link("1").name == "tcp1ms"
    assert parse_link("0").name == "tcp0" and "serial921600" in LINKS
