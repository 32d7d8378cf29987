"""Sockets of the rendezvous, shared by the port probe (on the worker) and rank 0 (the store).

Everything binds the address of the worker that hosts rank 0, never all interfaces.
"""

from __future__ import annotations

__all__ = ["bind_listener", "host_of", "interface_of"]

# How many connections the rendezvous socket queues (every rank connects once at start).
_LISTEN_BACKLOG = 1024


def host_of(address):
    """The host of a Dask address (``tcp://10.0.0.5:8786`` -> ``10.0.0.5``; IPv6 unbracketed)."""
    from distributed.comm import get_address_host

    return get_address_host(address)


def bind_listener(host, port):
    """A TCP socket bound to ``host:port`` only (never all interfaces), listening.

    ``host`` is the address of the worker that hosts rank 0 (a name is resolved); ``port`` 0
    lets the OS pick one. Raises :class:`OSError` (``EADDRINUSE``) when the port is taken.
    """
    import socket

    family, socktype, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[
        0
    ]
    sock = socket.socket(family, socktype, proto)
    try:
        # Like torch's own store: a port left in TIME_WAIT by a previous job can be reused.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(_LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def interface_of(host):
    """Name of this machine's network interface that carries ``host``, or None.

    ``host`` is an address or a name (resolved). An exact address match wins; otherwise the
    interface whose network contains it (``127.0.1.1``, Debian's address for the host name,
    is on the loopback interface ``lo``). Used to give each rank the interface of its own
    worker for gloo/NCCL (``GLOO_SOCKET_IFNAME``): without it gloo binds the address the host
    name resolves to, which on many machines is a loopback address the peers cannot reach.
    """
    import ipaddress
    import socket

    import psutil

    try:
        wanted = {
            ipaddress.ip_address(info[4][0].split("%")[0])
            for info in socket.getaddrinfo(host, None)
        }
    except (OSError, ValueError):
        return None
    networks = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.address:
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%")[0])
            except ValueError:
                continue
            if ip in wanted:
                return name
            if a.netmask:
                try:
                    networks.append((name, ipaddress.ip_network(f"{ip}/{a.netmask}", strict=False)))
                except ValueError:
                    continue
    for name, net in networks:
        if any(ip in net for ip in wanted):
            return name
    return None
