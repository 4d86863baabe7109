"""A WAN emulator as a TCP proxy: latency, shared bandwidth cap, faults.

Pure asyncio, no root, no kernel module. The proxy listens on a free
loopback port and forwards every connection to one target ``host:port``.
Each direction ("up": client to target, "down": target to client) has

- a one-way latency, added to every chunk without limiting throughput
  (chunks are timestamped and released at ``t + delay``, like a pipe that
  holds a bandwidth-delay product of data in flight);
- a bandwidth cap, enforced by one serialisation clock SHARED by every
  connection through the proxy, as the bottleneck of a real link is;
- byte counters (the "bytes on the wire" of the benchmark).

Faults for tests are armed with :meth:`WanProxy.arm`: reset a connection
after N bytes, stall forwarding, corrupt one byte. A fault applies to the
next connection only or to every connection from now on.

:class:`ThreadedWanProxy` runs a proxy on its own event loop in a daemon
thread, for blocking code and for other processes (Orthanc peers) that
must go through it.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

__all__ = ["Direction", "FaultKind", "Fault", "LinkStats", "WanProxy", "ThreadedWanProxy"]

# Bytes read at once from a socket. Smaller reads on shaped links keep the
# shared clock fair between connections (one read is one "packet train");
# unshaped, large reads keep the proxy's per-chunk cost out of the figures.
READ_UNSHAPED = 256 * 1024
READ_SHAPED = 16 * 1024
# Bytes held per connection and direction (in the delay line and not yet
# written) before the proxy stops reading that side: a real link pushes back
# on the sender instead of buffering without bound. Twice the
# bandwidth-delay product keeps a shaped link full; the floor covers a few
# reads. Unshaped with a latency, the rate is unknown: a generous bound.
MIN_QUEUED_BYTES = 1024 * 1024
UNSHAPED_DELAYED_QUEUED_BYTES = 16 * 1024 * 1024


class Direction(str, enum.Enum):
    UP = "up"        # client -> target
    DOWN = "down"    # target -> client


class FaultKind(str, enum.Enum):
    RESET = "reset"      # forward ``after_bytes`` bytes, then reset both sides
    STALL = "stall"      # after ``after_bytes`` bytes, forward nothing for ``seconds`` (or until released)
    CORRUPT = "corrupt"  # flip the bits of the byte at position ``after_bytes``


@dataclass(frozen=True)
class Fault:
    """One fault, positioned in the byte stream of one direction of a connection.

    ``after_bytes`` counts from the start of the connection in that direction.
    ``seconds=None`` on a stall means "until :meth:`WanProxy.release` is called".
    ``every_connection=False`` applies the fault to the next connection only.
    """

    kind: FaultKind
    direction: Direction = Direction.DOWN
    after_bytes: int = 0
    seconds: Optional[float] = None
    every_connection: bool = False

    def __post_init__(self) -> None:
        if self.after_bytes < 0:
            raise ValueError(f"Fault.after_bytes must be >= 0, got {self.after_bytes}")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError(f"Fault.seconds must be >= 0, got {self.seconds}")
        object.__setattr__(self, "kind", FaultKind(self.kind))
        object.__setattr__(self, "direction", Direction(self.direction))


@dataclass
class LinkStats:
    """Bytes forwarded by the proxy (after shaping), per direction."""

    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0
    faults_fired: int = 0    # armed faults that reached their byte (an armed one may never)

    @property
    def total(self) -> int:
        return self.bytes_up + self.bytes_down

    def copy(self) -> "LinkStats":
        return LinkStats(self.bytes_up, self.bytes_down, self.connections, self.faults_fired)


class _LinkDirection:
    """Shaping of one direction: latency plus a shared serialisation clock.

    The clock is the time at which the bottleneck will have finished sending
    everything queued so far. A chunk of ``n`` bytes occupies it for
    ``n / rate`` seconds; whoever asks next queues behind. A small burst
    allowance lets an idle link send a little at once, as real links do.
    """

    def __init__(self, latency_s: float, rate_bytes_s: Optional[float]) -> None:
        self.latency_s = latency_s
        self.rate = rate_bytes_s
        self._busy_until = 0.0

    @property
    def shaped(self) -> bool:
        return self.rate is not None

    async def transmit(self, nbytes: int) -> float:
        """Wait until ``nbytes`` have left the bottleneck; return the time they did."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.rate is None:
            return now
        burst = max(16 * 1024, self.rate * 0.005) / self.rate  # seconds of credit
        start = max(self._busy_until, now - burst)
        self._busy_until = start + nbytes / self.rate
        if self._busy_until > now:
            await asyncio.sleep(self._busy_until - now)
        return max(self._busy_until, now)


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Forward small writes at once: Nagle's delay would add its own latency
    (40 ms per request-answer with delayed ACKs) on top of the emulated one."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


_RESET = object()   # marker in a delay line: reset the connection when it comes out


def queue_bound(link: "_LinkDirection") -> int:
    """Bytes one direction of a connection may hold before its reader waits."""
    if link.rate is None:
        return MIN_QUEUED_BYTES if link.latency_s == 0 else UNSHAPED_DELAYED_QUEUED_BYTES
    return max(MIN_QUEUED_BYTES, int(2 * link.rate * link.latency_s))


class _DelayLine:
    """FIFO of (due time, payload) bounded in bytes, not in items.

    Its one reader calls :meth:`wait_room` before taking data from its
    socket; markers (end of stream, reset, stall) count 0 bytes and never
    wait, so they always get through."""

    def __init__(self) -> None:
        self._items: "collections.deque[Tuple[float, object, int]]" = collections.deque()
        self._bytes = 0
        self._changed = asyncio.Event()

    async def wait_room(self, nbytes: int, bound: int) -> None:
        while self._bytes and self._bytes + nbytes > bound:
            self._changed.clear()
            await self._changed.wait()

    async def put(self, item: Optional[Tuple[float, object]], nbytes: int = 0) -> None:
        due, payload = item if item is not None else (0.0, None)
        self._items.append((due, payload if item is not None else _END, nbytes))
        self._bytes += nbytes
        self._changed.set()

    async def get(self) -> Optional[Tuple[float, object]]:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        due, payload, nbytes = self._items.popleft()
        self._bytes -= nbytes
        self._changed.set()
        return None if payload is _END else (due, payload)


_END = object()     # end of stream in a delay line


class _Connection:
    """One proxied connection: two pumps (up and down) through the link."""

    def __init__(self, proxy: "WanProxy", client_r: asyncio.StreamReader,
                 client_w: asyncio.StreamWriter, faults: List[Fault]) -> None:
        self.proxy = proxy
        self.client_r, self.client_w = client_r, client_w
        self.target_w: Optional[asyncio.StreamWriter] = None
        self.faults = faults
        self.tasks: List[asyncio.Task] = []
        self.closed = False

    async def run(self) -> None:
        try:
            target_r, self.target_w = await asyncio.open_connection(
                self.proxy.target_host, self.proxy.target_port)
        except OSError:
            # Target down: the client sees its connection closed, as with a dead route.
            self._abort()
            return
        _no_delay(self.target_w)
        pumps = [self._pump(self.client_r, self.target_w, Direction.UP),
                 self._pump(target_r, self.client_w, Direction.DOWN)]
        self.tasks = [asyncio.ensure_future(p) for p in pumps]
        try:
            await asyncio.gather(*self.tasks)
        except asyncio.CancelledError:
            for t in self.tasks:
                t.cancel()
            self._abort()
            raise
        finally:
            self._close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: Direction) -> None:
        faults = sorted((f for f in self.faults if f.direction == direction), key=lambda f: f.after_bytes)
        queue = _DelayLine()
        sender = asyncio.ensure_future(self._deliver(queue, writer, direction))
        position = 0
        try:
            while not self.closed:
                link = self.proxy._links[direction]  # re-read: set_link() may change it mid-connection
                data = await reader.read(READ_SHAPED if link.shaped else READ_UNSHAPED)
                if not data:
                    break
                # Cut the chunk at fault positions so each fault acts on its exact byte.
                while data:
                    fault = faults[0] if faults else None
                    end = position + len(data)
                    if fault is None or end < fault.after_bytes or (
                            fault.kind is FaultKind.CORRUPT and end == fault.after_bytes):
                        piece, data = data, b""
                    elif fault.kind is FaultKind.CORRUPT:
                        i = fault.after_bytes - position
                        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                        faults.pop(0)
                        self.proxy.stats.faults_fired += 1
                        continue
                    else:
                        cut = fault.after_bytes - position
                        piece, data = data[:cut], data[cut:]
                        faults.pop(0)
                        self.proxy.stats.faults_fired += 1
                        if piece:
                            await self._through_link(link, queue, piece)
                            position += len(piece)
                        if fault.kind is FaultKind.RESET:
                            await queue.put((0.0, _RESET))
                            break
                        await queue.put((0.0, fault))  # a stall, enacted in stream order by the sender
                        continue
                    await self._through_link(link, queue, piece)
                    position += len(piece)
                else:
                    continue
                break  # reset reached
        except (ConnectionError, OSError):
            # One side reset: pass the reset on to the other side.
            self._abort()
        except asyncio.CancelledError:
            sender.cancel()
            raise
        await queue.put(None)  # end of stream: half-close once the data in flight is out
        try:
            await sender
        except asyncio.CancelledError:
            sender.cancel()
            raise

    async def _through_link(self, link: _LinkDirection, queue: "_DelayLine", piece: bytes) -> None:
        # Room first, then the link: data waiting for a slow receiver must
        # not occupy the bottleneck's clock.
        await queue.wait_room(len(piece), queue_bound(link))
        sent_at = await link.transmit(len(piece))
        await queue.put((sent_at + link.latency_s, piece), len(piece))

    async def _deliver(self, queue: "_DelayLine", writer: asyncio.StreamWriter,
                       direction: Direction) -> None:
        """Release chunks when due. Always consumes the queue up to its end
        marker, so the reader never blocks on a full queue after a reset."""
        loop = asyncio.get_running_loop()
        while True:
            item = await queue.get()
            if item is None:
                if not self.closed:
                    try:
                        if writer.can_write_eof():
                            writer.write_eof()
                    except (OSError, RuntimeError):
                        pass
                return
            if self.closed:
                continue
            due, payload = item
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if payload is _RESET:
                self._abort()
                continue
            if isinstance(payload, Fault):
                await self.proxy._stall(payload)
                continue
            try:
                writer.write(payload)
                await writer.drain()
            except (ConnectionError, OSError):
                self._abort()
                continue
            self.proxy._count(direction, len(payload))

    def _abort(self) -> None:
        """Reset both sides (RST, not FIN) so peers see a broken connection."""
        if self.closed:
            return
        self.closed = True
        for w in (self.client_w, self.target_w):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()  # both readers then see EOF and their pumps finish

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.client_w, self.target_w):
            if w is not None:
                w.close()


class WanProxy:
    """An emulated link in front of ``target_host:target_port``.

    ``latency_ms`` is the one-way delay, applied in both directions unless
    ``latency_up_ms`` / ``latency_down_ms`` say otherwise (a round trip is
    twice the one-way delay). ``bandwidth_mbit`` caps each direction in
    10^6 bits per second, shared by all connections; ``None`` = unshaped.
    """

    def __init__(self, target_host: str, target_port: int, latency_ms: float = 0.0,
                 bandwidth_mbit: Optional[float] = None, *,
                 latency_up_ms: Optional[float] = None, latency_down_ms: Optional[float] = None,
                 bandwidth_up_mbit: Optional[float] = None, bandwidth_down_mbit: Optional[float] = None,
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: Set[asyncio.Task] = set()
        self._faults_next: List[Fault] = []
        self._faults_all: List[Fault] = []
        self._stalls: Set[asyncio.Event] = set()
        self.stats = LinkStats()
        self._links: Dict[Direction, _LinkDirection] = {}
        self.set_link(latency_ms, bandwidth_mbit, latency_up_ms=latency_up_ms,
                      latency_down_ms=latency_down_ms, bandwidth_up_mbit=bandwidth_up_mbit,
                      bandwidth_down_mbit=bandwidth_down_mbit)

    # --- configuration ---------------------------------------------------

    def set_link(self, latency_ms: float = 0.0, bandwidth_mbit: Optional[float] = None, *,
                 latency_up_ms: Optional[float] = None, latency_down_ms: Optional[float] = None,
                 bandwidth_up_mbit: Optional[float] = None,
                 bandwidth_down_mbit: Optional[float] = None) -> None:
        """Change the shaping; applies to data read from now on, on every connection."""
        def rate(mbit: Optional[float]) -> Optional[float]:
            if mbit is None:
                return None
            if mbit <= 0:
                raise ValueError(f"bandwidth must be > 0 Mbit/s, got {mbit}")
            return mbit * 1_000_000 / 8
        if latency_ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {latency_ms}")
        up_ms = latency_ms if latency_up_ms is None else latency_up_ms
        down_ms = latency_ms if latency_down_ms is None else latency_down_ms
        up_bw = bandwidth_mbit if bandwidth_up_mbit is None else bandwidth_up_mbit
        down_bw = bandwidth_mbit if bandwidth_down_mbit is None else bandwidth_down_mbit
        self._links = {Direction.UP: _LinkDirection(up_ms / 1000.0, rate(up_bw)),
                       Direction.DOWN: _LinkDirection(down_ms / 1000.0, rate(down_bw))}

    def arm(self, fault: Fault) -> None:
        """Apply ``fault`` to the next connection, or to all (``every_connection``)."""
        (self._faults_all if fault.every_connection else self._faults_next).append(fault)

    def clear_faults(self) -> None:
        self._faults_next.clear()
        self._faults_all.clear()

    def release(self) -> None:
        """End every stall that waits for release (``seconds=None``) or is running."""
        for event in list(self._stalls):
            event.set()

    @property
    def active_stalls(self) -> int:
        """How many stalls are holding data right now (tests wait on this)."""
        return len(self._stalls)

    def reset_stats(self) -> LinkStats:
        """Return the counters so far and start again from zero."""
        old, self.stats = self.stats, LinkStats()
        return old

    # --- life cycle ------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("WanProxy is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy, for HTTP targets."""
        return f"http://{self.listen_host}:{self.port}"

    async def start(self) -> "WanProxy":
        self._server = await asyncio.start_server(self._accept, self.listen_host, self._listen_port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "WanProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- internals -------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        faults = self._faults_next + self._faults_all
        self._faults_next = []
        self.stats.connections += 1
        connection = _Connection(self, reader, writer, faults)
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await connection.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)

    def _count(self, direction: Direction, n: int) -> None:
        if direction is Direction.UP:
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    async def _stall(self, fault: Fault) -> None:
        event = asyncio.Event()
        self._stalls.add(event)
        try:
            await asyncio.wait_for(event.wait(), fault.seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._stalls.discard(event)


class ThreadedWanProxy:
    """A :class:`WanProxy` on its own event loop in a background thread.

    ``with ThreadedWanProxy("127.0.0.1", 8042, latency_ms=20) as p: ... p.url``
    Methods are thread-safe; stats are read as a consistent copy.
    """

    def __init__(self, target_host: str, target_port: int, latency_ms: float = 0.0,
                 bandwidth_mbit: Optional[float] = None, **kwargs: object) -> None:
        self._args: Tuple = (target_host, target_port, latency_ms, bandwidth_mbit)
        self._kwargs = kwargs
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self.proxy: Optional[WanProxy] = None

    def start(self) -> "ThreadedWanProxy":
        ready = threading.Event()
        failure: List[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.proxy = WanProxy(*self._args, **self._kwargs)  # type: ignore[arg-type]
                loop.run_until_complete(self.proxy.start())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="wan-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise RuntimeError(f"WAN proxy could not start: {failure[0]}") from failure[0]
        return self

    def _call(self, fn, *args, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        """Run ``fn(*args)`` (sync or coroutine function) on the proxy's loop and wait."""
        assert self._loop is not None and self.proxy is not None, "ThreadedWanProxy is not started"

        async def wrapper():  # type: ignore[no-untyped-def]
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    @property
    def port(self) -> int:
        assert self.proxy is not None, "ThreadedWanProxy is not started"
        return self.proxy.port

    @property
    def url(self) -> str:
        assert self.proxy is not None, "ThreadedWanProxy is not started"
        return self.proxy.url

    @property
    def stats(self) -> LinkStats:
        assert self.proxy is not None
        return self._call(lambda: self.proxy.stats.copy())  # type: ignore[union-attr]

    def reset_stats(self) -> LinkStats:
        assert self.proxy is not None
        return self._call(self.proxy.reset_stats)

    def set_link(self, latency_ms: float = 0.0, bandwidth_mbit: Optional[float] = None,
                 **kwargs: object) -> None:
        assert self.proxy is not None
        self._call(lambda: self.proxy.set_link(latency_ms, bandwidth_mbit, **kwargs))  # type: ignore

    def arm(self, fault: Fault) -> None:
        assert self.proxy is not None
        self._call(self.proxy.arm, fault)

    def clear_faults(self) -> None:
        assert self.proxy is not None
        self._call(self.proxy.clear_faults)

    def release(self) -> None:
        assert self.proxy is not None
        self._call(self.proxy.release)

    @property
    def active_stalls(self) -> int:
        assert self.proxy is not None
        return self._call(lambda: self.proxy.active_stalls)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self.proxy is not None and self.proxy._server is not None:
            self._call(self.proxy.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> "ThreadedWanProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
