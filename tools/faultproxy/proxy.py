"""The proxy engine: asyncio, four tasks per connection.

Each direction of a connection (up: client to target, down: target to client)
has a reader task that stamps every chunk with its arrival time and queues it,
and a writer task that releases each chunk at arrival + delay, in order. So a
delay shifts a stream in time without spacing its chunks apart: pipelined
data keeps its throughput. The queue of a direction holds at most --buffer
bytes; when it is full the reader stops reading and TCP pushes back on the
sender.

Faults are applied by the writers, which count the bytes they forward: a cut
or stall offset is hit exactly (a chunk crossing it is split). Nothing here
looks into the bytes; TLS passes through untouched.
"""

import asyncio
import collections
import fcntl
import json
import math
import os
import signal
import socket
import struct
import sys
import termios
import time

CHUNK = 256 * 1024
TIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # unacknowledged bytes in a TCP send queue
LINGER_SECONDS = 2.0  # how long a FIN cut keeps reading (and dropping) what the peers still send


class Log:
    """One JSON object per line: {"t": seconds since start, "event": ..., ...}."""

    def __init__(self, stream):
        self.stream = stream
        self.start = time.monotonic()

    def event(self, name, **fields):
        if self.stream is None:
            return
        rec = {"t": round(time.monotonic() - self.start, 6), "event": name}
        rec.update(fields)
        try:
            self.stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


class ChunkQueue:
    """FIFO of (release time, bytes or None for end of stream), bounded in bytes."""

    def __init__(self, limit):
        self.items = collections.deque()
        self.size = 0
        self.limit = limit
        self.nonempty = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()

    async def wait_space(self):
        while self.size >= self.limit:
            self.space.clear()
            await self.space.wait()

    def put(self, release, data):
        self.items.append((release, data))
        if data:
            self.size += len(data)
        self.nonempty.set()

    async def get(self):
        while not self.items:
            self.nonempty.clear()
            await self.nonempty.wait()
        release, data = self.items.popleft()
        if data:
            self.size -= len(data)
            self.space.set()
        return release, data


class Direction:
    def __init__(self, name, reader, writer, faults, buffer_limit):
        self.name = name
        self.reader = reader
        self.writer = writer
        self.queue = ChunkQueue(buffer_limit)
        self.sent = 0
        self.rate = faults.rate
        self.piece = max(1, min(CHUNK, int(faults.rate / 50))) if faults.rate else None
        self.rate_next = 0.0

    async def pace(self, n):
        """Waits until `n` more bytes fit the rate limit."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.rate_next > now:
            await asyncio.sleep(self.rate_next - now)
            now = loop.time()
        self.rate_next = max(self.rate_next, now) + n / self.rate


def _peer(writer):
    try:
        addr = writer.get_extra_info("peername")
        return f"{addr[0]}:{addr[1]}" if addr else None
    except Exception:
        return None


def _unsent(sock):
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), TIOCOUTQ, struct.pack("i", 0)))[0]
    except OSError:
        return 0


def _reset(writer):
    """Closes at once with RST (SO_LINGER 0)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class Connection:
    def __init__(self, proxy, number, faults, client_reader, client_writer):
        self.proxy = proxy
        self.log = proxy.log
        self.number = number
        self.faults = faults
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.server_writer = None
        self.up = None
        self.down = None
        self.cut_at = faults.cut_at
        self.stall_at = faults.stall_at
        self.cutting = False
        self.stall_until = 0.0
        self.stall_logged_end = True
        self.started = time.monotonic()

    # ---- counting and thresholds ------------------------------------------------

    def counted(self, which):
        if which == "up":
            return self.up.sent
        if which == "down":
            return self.down.sent
        return self.up.sent + self.down.sent

    def budget(self, d):
        """Bytes direction `d` may write before the next cut or stall offset (None: no limit)."""
        b = None
        f = self.faults
        if self.cut_at is not None and f.cut_direction in (d.name, "both"):
            b = max(0, self.cut_at - self.counted(f.cut_direction))
        if self.stall_at is not None and f.stall_direction in (d.name, "both"):
            s = max(0, self.stall_at - self.counted(f.stall_direction))
            b = s if b is None else min(b, s)
        return b

    def check(self):
        """Starts a stall or a cut whose offset has been reached; True once the connection is being cut."""
        if self.cutting:
            return True
        f = self.faults
        if self.stall_at is not None and self.counted(f.stall_direction) >= self.stall_at:
            at, self.stall_at = self.stall_at, None
            p = self.proxy
            if p.stalls_limit is None or p.stalls_done < p.stalls_limit:
                p.stalls_done += 1
                self.stall_until = asyncio.get_running_loop().time() + f.stall_seconds
                self.stall_logged_end = False
                self.log.event("stall", conn=self.number, at=at, direction=f.stall_direction,
                               seconds=None if math.isinf(f.stall_seconds) else f.stall_seconds,
                               up=self.up.sent, down=self.down.sent, stall_number=p.stalls_done)
        if self.cut_at is not None and self.counted(f.cut_direction) >= self.cut_at:
            p = self.proxy
            if p.cuts_limit is not None and p.cuts_done >= p.cuts_limit:
                self.cut_at = None
                return False
            p.cuts_done += 1
            self.cutting = True
            self.log.event("cut", conn=self.number, at=self.cut_at, direction=f.cut_direction,
                           up=self.up.sent, down=self.down.sent, reset=f.reset, cut_number=p.cuts_done)
            return True
        return False

    async def wait_unstalled(self):
        loop = asyncio.get_running_loop()
        while True:
            left = self.stall_until - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 3600.0))
        if not self.stall_logged_end:
            self.stall_logged_end = True
            self.log.event("resume", conn=self.number, up=self.up.sent, down=self.down.sent)

    # ---- the two halves of a direction --------------------------------------------

    async def pump_in(self, d):
        loop = asyncio.get_running_loop()
        while True:
            await d.queue.wait_space()
            data = await d.reader.read(CHUNK)
            if not data and math.isinf(self.stall_until):
                return "closed while stalled"  # nothing will ever be forwarded again: end it
            d.queue.put(loop.time() + self.faults.delay, data or None)
            if not data:
                return "eof"

    async def pump_out(self, d):
        loop = asyncio.get_running_loop()
        while True:
            release, data = await d.queue.get()
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.cutting:
                return "stopped"
            if data is None:
                await self.wait_unstalled()
                if self.cutting:
                    return "stopped"
                if d.writer.can_write_eof() and not d.writer.transport.is_closing():
                    d.writer.write_eof()
                return "eof"
            view = memoryview(data)
            pos = 0
            while pos < len(view):
                if self.check():
                    return "stopped"
                if self.stall_until > loop.time():
                    await self.wait_unstalled()
                    continue
                n = len(view) - pos
                b = self.budget(d)
                if b is not None:
                    n = min(n, b)
                    if n == 0:
                        # the other direction reached a shared offset; check() handles it next round
                        await asyncio.sleep(0)
                        continue
                if d.rate:
                    n = min(n, d.piece)
                    await d.pace(n)
                    if self.cutting:
                        return "stopped"
                    if self.stall_until > loop.time():
                        continue
                d.writer.write(view[pos:pos + n])
                pos += n
                d.sent += n
                if self.check():
                    return "cut"
            await d.writer.drain()

    # ---- life of a connection ------------------------------------------------------

    async def run(self):
        p = self.proxy
        client = _peer(self.client_writer)
        self.log.event("open", conn=self.number, client=client, **self.faults.describe())
        reason = "eof"
        tasks = []
        try:
            try:
                server_reader, self.server_writer = await asyncio.wait_for(
                    asyncio.open_connection(p.target[0], p.target[1], limit=CHUNK), p.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                reason = f"connect to target failed: {e!r}"
                self.log.event("error", conn=self.number, error=reason)
                self.client_writer.transport.abort()
                return
            self.up = Direction("up", self.client_reader, self.server_writer, self.faults, p.buffer_limit)
            self.down = Direction("down", server_reader, self.client_writer, self.faults, p.buffer_limit)
            if self.check():
                reason = "cut"
            else:
                tasks = [asyncio.create_task(self.pump_in(self.up)), asyncio.create_task(self.pump_out(self.up)),
                         asyncio.create_task(self.pump_in(self.down)), asyncio.create_task(self.pump_out(self.down))]
                outs = {tasks[1], tasks[3]}
                pending = set(tasks)
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    results = [t.result() for t in done if not t.cancelled() and t.exception() is None]
                    errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
                    if self.cutting:
                        reason = "cut"
                        break
                    if errors:
                        reason = f"error: {errors[0]!r}"
                        break
                    if "closed while stalled" in results:
                        reason = "closed while stalled"
                        break
                    if outs.isdisjoint(pending):
                        break
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if reason == "cut":
                await self.cut()
            elif reason in ("eof", "closed while stalled"):
                self.client_writer.close()
                self.server_writer.close()
            else:
                for w in (self.client_writer, self.server_writer):
                    _reset(w)
        except asyncio.CancelledError:
            reason = "shutdown"
            raise
        except Exception as e:  # one connection's trouble never stops the proxy
            reason = f"error: {e!r}"
            self.log.event("error", conn=self.number, error=repr(e))
        finally:
            for t in tasks:
                t.cancel()
            for w in (self.client_writer, self.server_writer):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()
            self.log.event("close", conn=self.number, reason=reason,
                           up=self.up.sent if self.up else 0, down=self.down.sent if self.down else 0,
                           seconds=round(time.monotonic() - self.started, 6))

    async def cut(self):
        """Delivers what was written, then closes both sides: FIN, or RST with --reset."""
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        sides = [(self.client_writer, self.client_reader)]
        if self.server_writer is not None:
            sides.append((self.server_writer, self.down.reader))
        reset = self.faults.reset
        await asyncio.gather(*(self._flush(w, deadline, reset) for w, _ in sides), return_exceptions=True)
        if reset:
            for w, _ in sides:
                _reset(w)
            return
        # FIN, then drop what the peers still send until they close: closing a socket with unread
        # data would send RST.
        for w, _ in sides:
            try:
                if w.can_write_eof() and not w.transport.is_closing():
                    w.write_eof()
            except OSError:
                pass
        await asyncio.gather(*(self._drop_until_eof(r, deadline) for _, r in sides), return_exceptions=True)
        for w, _ in sides:
            w.close()

    async def _flush(self, writer, deadline, wait_for_ack):
        loop = asyncio.get_running_loop()
        transport = writer.transport
        if transport.is_closing():
            return
        transport.set_write_buffer_limits(0)
        await asyncio.wait_for(writer.drain(), max(0.0, deadline - loop.time()))
        if not wait_for_ack:
            return
        sock = transport.get_extra_info("socket")
        while sock is not None and loop.time() < deadline and _unsent(sock) > 0:
            await asyncio.sleep(0.005)

    async def _drop_until_eof(self, reader, deadline):
        loop = asyncio.get_running_loop()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            data = await asyncio.wait_for(reader.read(CHUNK), left)
            if not data:
                return


class Proxy:
    def __init__(self, target, rules, log, cuts_limit=None, stalls_limit=None, buffer_limit=16 << 20,
                 connect_timeout=10.0):
        self.target = target
        self.rules = rules
        self.log = log
        self.cuts_limit = cuts_limit
        self.stalls_limit = stalls_limit
        self.buffer_limit = buffer_limit
        self.connect_timeout = connect_timeout
        self.cuts_done = 0
        self.stalls_done = 0
        self.count = 0
        self.tasks = set()

    async def _accept(self, reader, writer):
        self.count += 1
        number = self.count
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            faults = self.rules.faults_for(number)
            await Connection(self, number, faults, reader, writer).run()
        except asyncio.CancelledError:
            pass
        except Exception as e:
            self.log.event("error", conn=number, error=repr(e))
            writer.transport.abort()
        finally:
            self.tasks.discard(task)

    async def serve(self, listen_sock, max_seconds=None, exit_with_parent=False, reload_rules=None, ready=None):
        """Serves until SIGTERM/SIGINT, --max-seconds or (optionally) the parent's exit; returns the reason."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.log.event(
            "error", error=ctx.get("message"), exception=repr(ctx.get("exception"))))
        server = await asyncio.start_server(self._accept, sock=listen_sock, limit=CHUNK)
        stop = loop.create_future()

        def finish(why):
            if not stop.done():
                stop.set_result(why)

        loop.add_signal_handler(signal.SIGTERM, finish, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, finish, "SIGINT")
        if reload_rules is not None:
            loop.add_signal_handler(signal.SIGHUP, reload_rules)
        if max_seconds is not None:
            loop.call_later(max_seconds, finish, "max-seconds")
        if exit_with_parent:
            parent = os.getppid()

            def watch():
                if os.getppid() != parent:
                    finish("parent exited")
                else:
                    loop.call_later(0.5, watch)
            loop.call_later(0.5, watch)
        if ready is not None:
            ready()
        why = await stop
        server.close()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        self.log.event("exit", reason=why, connections=self.count, cuts=self.cuts_done, stalls=self.stalls_done)
        return why


def listening_socket(host, port):
    """A listening TCP socket on the first address `host` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    err = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
            return sock
        except OSError as e:
            sock.close()
            err = e
    raise err or OSError(f"cannot resolve {host}")


def write_ready(info):
    try:
        sys.stdout.write(json.dumps(info, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
