"""A TCP relay between gdb and QEMU's gdbstub that slows the link and counts packets.

    relay = Relay(("127.0.0.1", qemu_gdb_port), delay_ms=1.0).start()
    # gdb: target remote 127.0.0.1:<relay.port>
    relay.reset()
    ...                       # one measured gdb command
    counts = relay.snapshot()

Everything gdb sends is held back `delay_ms` before it reaches the stub, in order:
with gdb waiting for each reply before its next request, that costs `delay_ms` per
round trip, as a remote or serial link would. With `bytes_per_s` set the relay is also
a serial line, in both directions: a unit of n bytes occupies its direction of the link
for n / bytes_per_s seconds after the previous one has left (kgdb over kgdboc at 115200
baud, 10 bits a byte, moves 11,520 bytes a second), so a 2 KiB `m` reply, 4 KiB of hex,
takes ~0.36 s. Without it the stub's replies pass untouched. `LINKS` names the links the
bench uses.
At 0 ms gdb's bytes are forwarded by the thread that reads them, without a hand-off;
even so the relay (Python threads) adds some tens of µs per round trip, so true 0 ms
times are taken with gdb straight on the stub.

Both directions are parsed as GDB remote serial protocol: packets `$data#cs` (and
`%notification#cs`), acks `+`/`-`, the bare 0x03 interrupt byte, `}` escapes. Packets
from gdb are counted by type; memory reads (`m addr,len`, and `x addr,len` which
newer gdbs use) are also logged with their address and length, so a measurement
can say which reads a command spends its time on.
"""
from __future__ import annotations

import collections
import dataclasses
import queue
import socket
import threading
import time
from typing import Any, Callable

# gdb → stub units waiting for their due time: (arrival, bytes, is a packet); None ends
Outbox = queue.Queue[tuple[float, bytes, bool] | None]

INTERRUPT = 0x03


@dataclasses.dataclass(frozen=True)
class Link:
    """A link to imitate: a hold per gdb → stub packet and, for a serial line, a byte rate."""

    name: str
    delay_ms: float
    bytes_per_s: float | None = None

    @property
    def label(self) -> str:
        if self.bytes_per_s is None:
            return f"relay {self.delay_ms:g} ms"
        return f"{self.name} ({self.bytes_per_s * 10:.0f} baud, +{self.delay_ms:g} ms/packet)"


# serial: 10 bits a byte (start, 8 data, stop); 0.5 ms per packet for kgdb's own handling
LINKS = {"tcp0": Link("tcp0", 0.0), "tcp1ms": Link("tcp1ms", 1.0),
         "serial115200": Link("serial115200", 0.5, 115200 / 10),
         "serial921600": Link("serial921600", 0.5, 921600 / 10)}


def parse_link(text: str) -> Link:
    """A link by name (`serial115200`) or a plain delay in ms (`1`: TCP with 1 ms)."""
    if text in LINKS:
        return LINKS[text]
    try:
        delay = float(text.removesuffix("ms"))
    except ValueError:
        raise ValueError(f"unknown link {text!r}; known: {', '.join(LINKS)} or a delay in ms") \
            from None
    return Link(f"tcp{delay:g}ms" if delay else "tcp0", delay)
SPIN_S = 0.0003          # the last 0.3 ms of a hold are waited out in a yield loop


@dataclasses.dataclass(frozen=True)
class Unit:
    """One protocol unit seen on the wire."""

    kind: str             # "packet", "notification", "ack", "nack", "interrupt", "junk"
    raw: bytes            # exactly the bytes that were on the wire
    payload: bytes = b""  # packet data, unescaped (run-length encoding is left as is)
    checksum_ok: bool = True


class RspParser:
    """Incremental splitter of an RSP byte stream into units (framing only).

    Fed arbitrary chunks; a packet split across chunks comes out once complete.
    Packet bodies are scanned in bulk (find/sum run in C): the parser sits on the
    relay's path, and a per-byte Python loop would cost ~0.1 ms per 128-byte read.
    """

    def __init__(self) -> None:
        self._state = "idle"         # idle | data | escape | check
        self._raw = bytearray()
        self._payload = bytearray()
        self._sum = 0
        self._check = bytearray()
        self._notification = False

    def feed(self, data: bytes) -> list[Unit]:
        units: list[Unit] = []
        index, end = 0, len(data)
        while index < end:
            state = self._state
            if state == "idle":
                byte = data[index]
                index += 1
                if byte in (0x24, 0x25):             # '$' packet, '%' notification
                    self._state = "data"
                    self._notification = byte == 0x25
                    self._raw = bytearray([byte])
                    self._payload = bytearray()
                    self._sum = 0
                elif byte == 0x2B:
                    units.append(Unit("ack", b"+"))
                elif byte == 0x2D:
                    units.append(Unit("nack", b"-"))
                elif byte == INTERRUPT:
                    units.append(Unit("interrupt", b"\x03"))
                else:
                    units.append(Unit("junk", bytes([byte])))
            elif state == "data":
                # the body up to the next '#' (end) or '}' (escape), in one slice
                stops = [i for i in (data.find(b"#", index), data.find(b"}", index)) if i >= 0]
                stop = min(stops) if stops else end
                chunk = data[index:stop]
                self._raw += chunk
                self._payload += chunk
                self._sum = (self._sum + sum(chunk)) & 0xFF
                index = stop
                if stop < end:
                    byte = data[stop]
                    index += 1
                    self._raw.append(byte)
                    if byte == 0x23:                 # '#': two hex checksum digits follow
                        self._state = "check"
                        self._check = bytearray()
                    else:                            # '}': the next byte is escaped
                        self._sum = (self._sum + byte) & 0xFF
                        self._state = "escape"
            elif state == "escape":
                byte = data[index]
                index += 1
                self._raw.append(byte)
                self._sum = (self._sum + byte) & 0xFF
                self._payload.append(byte ^ 0x20)
                self._state = "data"
            else:                                    # check
                byte = data[index]
                index += 1
                self._raw.append(byte)
                self._check.append(byte)
                if len(self._check) == 2:
                    self._state = "idle"
                    units.append(self._complete())
        return units

    def _complete(self) -> Unit:
        try:
            ok = int(self._check.decode("ascii"), 16) == self._sum
        except ValueError:
            ok = False
        return Unit("notification" if self._notification else "packet", bytes(self._raw),
                    bytes(self._payload), ok)


def packet_type(payload: bytes) -> str:
    """A short name for a request: `m`, `g`, `vCont`, `qXfer`, `qfThreadInfo`, ..."""
    if not payload:
        return "(empty)"
    head = chr(payload[0])
    if head in "qQv":
        # named requests: the name runs up to the first separator
        end = len(payload)
        for sep in b":,;":
            index = payload.find(bytes([sep]))
            if index != -1:
                end = min(end, index)
        return payload[:end].decode("ascii", "replace")
    return head


def parse_memory_read(payload: bytes) -> tuple[int, int] | None:
    """(address, length) of an `m`/`x` read request, else None."""
    if not payload or payload[0] not in b"mx":
        return None
    try:
        address, length = payload[1:].split(b",", 1)
        return int(address, 16), int(length, 16)
    except ValueError:
        return None


@dataclasses.dataclass
class Counters:
    """What crossed the relay since the last reset."""

    by_type: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    packets: int = 0              # gdb → stub packets (requests)
    memory_reads: int = 0         # of which `m`/`x`
    memory_read_bytes: int = 0    # bytes those reads asked for
    replies: int = 0              # stub → gdb packets
    reply_bytes: int = 0
    interrupts: int = 0
    bad_checksums: int = 0
    held_s: float = 0.0           # total time packets were actually held back (≥ the delay)
    held_packets: int = 0
    reads: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    """(seconds since reset, address, length) of each memory read, in order."""

    def as_dict(self) -> dict[str, Any]:
        return {"packets": self.packets, "memory_reads": self.memory_reads,
                "memory_read_bytes": self.memory_read_bytes, "replies": self.replies,
                "reply_bytes": self.reply_bytes, "interrupts": self.interrupts,
                "bad_checksums": self.bad_checksums, "by_type": dict(self.by_type),
                "mean_hold_ms": round(self.held_s / self.held_packets * 1000, 4)
                if self.held_packets else None}


class Relay:
    """Listens on a loopback port; each gdb connection gets its own stub connection.

    One connection at a time (QEMU's gdbstub takes one client). Counters are shared
    by all connections and guarded by a lock: the pumps run in threads.
    """

    def __init__(self, upstream: tuple[str, int], delay_ms: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0),
                 bytes_per_s: float | None = None) -> None:
        self.upstream = upstream
        self.delay_ms = delay_ms
        self.bytes_per_s = bytes_per_s
        self._up_free = 0.0           # when each direction of a serial link is free again
        self._down_free = 0.0
        self._server = socket.create_server(listen)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._counters = Counters()
        self._epoch = time.monotonic()
        self._in_flight = 0           # units queued or being delivered
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    # -- control API ------------------------------------------------------------------
    def start(self) -> "Relay":
        self._spawn(self._accept_loop, "relay-accept")
        return self

    def set_delay(self, delay_ms: float) -> None:
        """Change the delay; call it while gdb is idle (not in the middle of a packet)."""
        self.delay_ms = delay_ms

    def set_link(self, link: Link) -> None:
        """Imitate `link` (delay and byte rate); call it while gdb is idle."""
        self.delay_ms = link.delay_ms
        self.bytes_per_s = link.bytes_per_s

    def _wire_time(self, size: int) -> float:
        return size / self.bytes_per_s if self.bytes_per_s else 0.0

    def reset(self) -> None:
        """Zero the counters (right before a measured command)."""
        with self._lock:
            self._counters = Counters()
            self._epoch = time.monotonic()

    def snapshot(self) -> Counters:
        """A copy of the counters (right after a measured command)."""
        with self._lock:
            current = self._counters
            return dataclasses.replace(current, by_type=collections.Counter(current.by_type),
                                       reads=list(current.reads))

    def close(self) -> None:
        self._closed.set()
        for sock in [self._server, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pumps --------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                stub = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            stub.settimeout(None)
            for sock in (client, stub):
                # one small packet per round trip: Nagle would add its own delay
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, stub]
            with self._lock:
                self._in_flight = 0       # a previous connection may have died mid-queue
            outbox: Outbox = queue.Queue()
            self._spawn(self._read_gdb, "relay-gdb", client, stub, outbox)
            self._spawn(self._deliver, "relay-deliver", outbox, stub, client)
            self._spawn(self._read_stub, "relay-stub", stub, client)

    def _read_gdb(self, client: socket.socket, stub: socket.socket, outbox: Outbox) -> None:
        """gdb → stub: timestamp each unit as it arrives; the deliverer holds it back."""
        parser = RspParser()
        while True:
            data = _receive(client)
            if not data:
                outbox.put(None)
                return
            arrived = time.monotonic()
            with self._lock:
                # no delay and nothing in flight: forward from here at once, sparing the
                # 0 ms case a thread hand-off (order is kept: the deliverer is idle)
                direct = self.delay_ms <= 0 and not self.bytes_per_s and self._in_flight == 0
            if direct:
                try:
                    stub.sendall(data)
                except OSError:
                    outbox.put(None)
                    return
            units = parser.feed(data)
            for unit in units:
                self._count_request(unit, arrived)
            if direct:
                continue
            with self._lock:
                self._in_flight += len(units)
            for unit in units:
                outbox.put((arrived, unit.raw, unit.kind == "packet"))

    def _deliver(self, outbox: Outbox, stub: socket.socket, client: socket.socket) -> None:
        while True:
            item = outbox.get()
            if item is None:
                break
            arrived, raw, is_packet = item
            # due from arrival, so the thread hand-off is inside the delay, not added to it;
            # on a serial line after its bytes have crossed, behind the unit before it
            sent = max(arrived, self._up_free) + self._wire_time(len(raw))
            self._up_free = sent
            due = sent + (self.delay_ms / 1000.0 if is_packet or not self.bytes_per_s else 0)
            _wait_until(due)
            try:
                stub.sendall(raw)
            except OSError:
                break
            held = time.monotonic() - arrived
            with self._lock:
                self._in_flight -= 1
                if is_packet:
                    # what the link really cost (sleep overshoots by tens of µs)
                    self._counters.held_s += held
                    self._counters.held_packets += 1
        _close_both(stub, client)

    def _read_stub(self, stub: socket.socket, client: socket.socket) -> None:
        """stub → gdb: forwarded at once; parsed only to count replies."""
        parser = RspParser()
        while True:
            data = _receive(stub)
            if not data:
                break
            if self.bytes_per_s:
                # the reply's bytes cross the line one after another
                self._down_free = max(time.monotonic(), self._down_free) + \
                    self._wire_time(len(data))
                _wait_until(self._down_free)
            try:
                client.sendall(data)
            except OSError:
                break
            units = parser.feed(data)       # after forwarding: off the round trip's path
            with self._lock:
                for unit in units:
                    if unit.kind in ("packet", "notification"):
                        self._counters.replies += 1
                        self._counters.reply_bytes += len(unit.raw)
        _close_both(stub, client)

    def _count_request(self, unit: Unit, arrived: float) -> None:
        with self._lock:
            counters = self._counters
            if unit.kind == "interrupt":
                counters.interrupts += 1
                counters.by_type["^C"] += 1
                return
            if unit.kind != "packet":
                return
            if not unit.checksum_ok:
                counters.bad_checksums += 1
            counters.packets += 1
            counters.by_type[packet_type(unit.payload)] += 1
            read = parse_memory_read(unit.payload)
            if read is not None:
                counters.memory_reads += 1
                counters.memory_read_bytes += read[1]
                counters.reads.append((arrived - self._epoch, read[0], read[1]))


def _wait_until(due: float) -> None:
    """A sleep wakes 0.1 ms late or more on a loaded host: sleep short of the due time,
    then yield (sleep(0) releases the GIL) until it comes."""
    wait = due - time.monotonic() - SPIN_S
    if wait > 0:
        time.sleep(wait)
    while time.monotonic() < due:
        time.sleep(0)


def _receive(sock: socket.socket) -> bytes:
    """Up to 64 KiB; b"" when the peer closed or the socket failed (both end the relay)."""
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close_both(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
