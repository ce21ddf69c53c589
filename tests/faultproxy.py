"""A small threaded TCP relay on 127.0.0.1 that can break the connections it carries.

    proxy = FaultProxy("127.0.0.1:8086")   # forwards 127.0.0.1:<proxy.port> to the target
    os.environ["BIGTABLE_EMULATOR_HOST"] = proxy.host
    proxy.blackhole()   # existing connections go silent forever (no FIN, no RST); new ones pass
    proxy.reset()       # existing connections are reset (RST to both sides); new ones pass
    proxy.close()

A blackholed connection stands for a NAT or load balancer that forgot it: the relay stops
forwarding in both directions and keeps both sockets open, so neither end learns anything
(the client's kernel still acknowledges what it sent; nothing ever answers). Both sockets of
every connection have TCP_NODELAY set: without it gRPC over the relay slows to a crawl.
"""
from __future__ import annotations

import socket
import struct
import threading


class _Link:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, proxy: "FaultProxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client, self.upstream = client, upstream
        self.dead = threading.Event()    # blackholed: forward nothing, ever
        self.closed = threading.Event()
        for src, dst, name in ((client, upstream, "up"), (upstream, client, "down")):
            threading.Thread(target=self._pump, args=(src, dst, name), daemon=True,
                             name=f"faultproxy-{name}").start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str):
        try:
            while not self.dead.is_set():
                data = src.recv(65536)
                if self.dead.is_set():
                    break  # dropped on the floor
                if not data:
                    dst.shutdown(socket.SHUT_WR)  # pass an orderly close on
                    return
                dst.sendall(data)
                self.proxy._count(direction, len(data))
        except OSError:
            if not self.dead.is_set():
                self.close()
            return
        # blackholed: keep both sockets open and silent until the proxy closes
        self.closed.wait()

    def blackhole(self):
        self.dead.set()

    def reset(self):
        """RST both sides (SO_LINGER 0, then close)."""
        linger = struct.pack("ii", 1, 0)
        for sock in (self.client, self.upstream):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
        self.close()

    def close(self):
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                sock.close()
            except OSError:
                pass


class FaultProxy:
    """Relays 127.0.0.1:<port> to `target` ("host:port") with switchable faults."""

    def __init__(self, target: str):
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._links: list[_Link] = []   # passing
        self._holes: list[_Link] = []   # blackholed, kept open until close()
        self.connections = 0   # accepted so far
        self.bytes_up = 0      # client -> target, forwarded
        self.bytes_down = 0    # target -> client, forwarded
        self._closing = False
        threading.Thread(target=self._accept, daemon=True, name="faultproxy-accept").start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closing:
                    client.close()
                    upstream.close()
                    return
                self.connections += 1
                self._links.append(_Link(self, client, upstream))

    def _count(self, direction: str, n: int):
        with self._lock:
            if direction == "up":
                self.bytes_up += n
            else:
                self.bytes_down += n

    def _take_links(self) -> list[_Link]:
        with self._lock:
            links, self._links = self._links, []
        return links

    def blackhole(self) -> int:
        """Silently drop every existing connection forever; returns how many. New ones pass."""
        links = self._take_links()
        for link in links:
            link.blackhole()
        with self._lock:
            self._holes.extend(links)
        return len(links)

    def reset(self) -> int:
        """Reset every existing connection (RST both ways); returns how many. New ones pass."""
        links = self._take_links()
        for link in links:
            link.reset()
        return len(links)

    def close(self):
        with self._lock:
            self._closing = True
            links = self._links + self._holes
            self._links, self._holes = [], []
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        for link in links:
            link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
