"""The shared-memory registry's rules, and how the caller's user is found (no daemon needed)."""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from edgetpud.daemon.api.peer import caller_of, tcp_uids, unix_peer_uids
from edgetpud.daemon.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from edgetpud.daemon.shm import Caller, SharedMemoryRegistry, may_open

ME = Caller(frozenset({os.getuid()}), "test")
STRANGER = 54321  # a uid no file here belongs to


@pytest.fixture()
def obj(tmp_path: Path) -> Path:
    path = tmp_path / f"o{uuid.uuid4().hex[:6]}"
    path.write_bytes(bytes(range(256)) * 4)
    path.chmod(0o600)
    return path


def test_a_caller_may_name_only_an_object_it_could_open(tmp_path, obj):
    registry = SharedMemoryRegistry(root=tmp_path)
    stranger = Caller(frozenset({STRANGER}), "unix socket")
    with pytest.raises(PermissionDeniedError, match=f"uid {STRANGER}.*could not read it itself.*mode 0600"):
        registry.register("r", obj.name, 0, 16, stranger)
    assert registry.status() == []
    obj.chmod(0o604)  # readable by others: allowed, but read-only for a stranger
    registry.register("r", obj.name, 0, 16, stranger)
    region = registry.region("r")
    assert not region.writable
    with pytest.raises(InvalidArgumentError, match="read-only"):
        region.write(0, memoryview(b"x"), stranger, "output 'o'")
    assert bytes(region.read(4, 4, stranger, "input 'i'")) == bytes([4, 5, 6, 7])


def test_every_candidate_user_must_be_able_to_open_it(obj):
    st = obj.stat()
    assert may_open(st, st.st_uid, write=True) or st.st_uid == 0
    assert not may_open(st, STRANGER, write=False)
    registry = SharedMemoryRegistry(root=obj.parent)
    with pytest.raises(PermissionDeniedError, match=str(STRANGER)):
        registry.register("r", obj.name, 0, 16, Caller(frozenset({os.getuid(), STRANGER}), "unix socket"))
    with pytest.raises(PermissionDeniedError, match="cannot tell which user"):
        registry.register("r", obj.name, 0, 16, Caller(frozenset(), "ipv4:10.0.0.9:4000"))


def test_reads_are_bounded_by_the_region_and_the_object(obj):
    registry = SharedMemoryRegistry(root=obj.parent)
    registry.register("r", obj.name, 8, 16, ME)
    region = registry.region("r")
    assert bytes(region.read(0, 4, ME, "i")) == bytes([8, 9, 10, 11])  # the region starts at offset 8
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        region.read(10, 8, ME, "i")
    os.truncate(obj, 12)
    with pytest.raises(InvalidArgumentError, match="shrank to 12 bytes"):
        region.read(0, 4, ME, "i")
    obj.unlink()
    with pytest.raises(NotFoundError, match="removed or replaced"):
        region.read(0, 4, ME, "i")
    registry.unregister("r")
    registry.unregister("r")  # unknown names are fine, as in Triton
    with pytest.raises(NotFoundError):
        registry.region("r")


def test_a_symlink_or_a_folder_is_not_a_shared_memory_object(tmp_path, obj):
    (tmp_path / "link").symlink_to(obj)
    (tmp_path / "dir").mkdir()
    registry = SharedMemoryRegistry(root=tmp_path)
    with pytest.raises(InvalidArgumentError, match="not a shared memory object"):
        registry.register("a", "/link", 0, 4, ME)
    with pytest.raises(InvalidArgumentError, match="not a shared memory object"):
        registry.register("b", "/dir", 0, 4, ME)


def test_a_tcp_caller_on_this_host_is_found_by_its_port():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        ip, port = client.getsockname()
        assert tcp_uids(ip, port) == {os.getuid()}
        assert caller_of(f"ipv4:{ip}:{port}").uids == {os.getuid()}
        assert caller_of("ipv4:203.0.113.9:1").uids == frozenset()  # not a socket of this host
    finally:
        client.close()
        server.close()


def test_a_unix_caller_is_among_the_connected_peers(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    accepted, _ = server.accept()
    try:
        assert os.getuid() in unix_peer_uids()
        assert caller_of("unix:").uids == unix_peer_uids()
    finally:
        for s in (accepted, client, server):
            s.close()
