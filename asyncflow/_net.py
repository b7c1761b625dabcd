"""The listening socket every server asyncflow starts (the service, the test servers) binds."""

from __future__ import annotations

import socket

__all__ = ["listening_socket"]


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket bound to ``host``:``port`` (0 for a free port), not listening yet.

    ``IPPROTO_TCP`` is given on purpose: asyncio sets TCP_NODELAY on accepted sockets only when
    the listening socket says TCP; without it every response pays Nagle + delayed ACK (40 ms).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
