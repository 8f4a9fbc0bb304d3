"""Which user a gRPC caller runs as, for the shared-memory rule "name only what you could open yourself".

gRPC's Python server does not hand over a connection's socket, so the peer's credentials are
found from outside it:

- TCP (``ipv4:IP:PORT`` / ``ipv6:[IP]:PORT``): the caller's own end of the connection is a socket
  of this host, listed in ``/proc/net/tcp{,6}`` with its owner's uid. A peer that is not there is
  on another host, and shared memory cannot reach it.
- unix socket: gRPC reports only ``unix:``, not which connection. The daemon looks at every unix
  connection it holds (``/proc/self/fd``) and reads each one's peer uid (``SO_PEERCRED``); the
  caller is one of them, so a region is allowed when *every* connected user could open it. That is
  exact on a camera box where one user's apps talk to edgetpud, and errs on the side of refusing
  when several users are connected at once (PERMISSION_DENIED names the uids).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Dict, FrozenSet, Iterable, Set

from edgetpud.daemon.shm import Caller

_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_known_uids: Dict[str, int] = {}  # socket inode -> peer uid (an inode is not reused while it is open)


def _tcp_hex(ip: str, port: int) -> str:
    """``IP:PORT`` as /proc/net/tcp{,6} writes a local address (32-bit words in host order)."""
    packed = ipaddress.ip_address(ip).packed
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def tcp_uids(ip: str, port: int, tables: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> FrozenSet[int]:
    """Owners of the sockets of this host whose local address is ``ip:port`` (the caller's end)."""
    wanted: Set[str] = {_tcp_hex(ip, port)}
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        wanted.add(_tcp_hex(str(address.ipv4_mapped), port))
    elif isinstance(address, ipaddress.IPv4Address):
        wanted.add(_tcp_hex(f"::ffff:{ip}", port))
    uids: Set[int] = set()
    for table in tables:
        try:
            with open(table) as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 7 and fields[1] in wanted:
                        uids.add(int(fields[7]))
        except OSError:
            continue
    return frozenset(uids)


def unix_peer_uids() -> FrozenSet[int]:
    """Uids of the peers of every named unix stream socket connection this process holds."""
    uids: Set[int] = set()
    seen: Set[str] = set()
    for fd_name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd_name}")
        except OSError:
            continue
        if not target.startswith("socket:"):
            continue
        seen.add(target)
        uid = _known_uids.get(target)
        if uid is None:
            uid = _unix_peer_uid(int(fd_name))
            if uid is None:
                continue
            _known_uids[target] = uid
        if uid >= 0:
            uids.add(uid)
    for gone in set(_known_uids) - seen:
        del _known_uids[gone]
    return frozenset(uids)


def _unix_peer_uid(fd: int) -> "int | None":
    """The peer uid of a connected unix socket on a path (-1 for any other socket; None: gone)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not sock.getsockname():
            return -1
        sock.getpeername()  # a listening socket has no peer: OSError
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        return uid
    except OSError:
        return -1
    finally:
        sock.close()  # closes the duplicate only


def caller_of(peer: str) -> Caller:
    """The Caller behind ``context.peer()``; no uids when it cannot be told (another host)."""
    if peer.startswith("unix:"):
        return Caller(unix_peer_uids(), "unix socket")
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        try:
            return Caller(tcp_uids(host, int(port)), f"TCP {host}:{port}")
        except ValueError:
            pass
    return Caller(frozenset(), peer or "unknown peer")
