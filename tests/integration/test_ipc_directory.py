"""The directory service's socket spoken by hand, as another tern service would: the domain
list (IPC types 24/25) reflects CLI changes at once, and a malformed frame ends only that
connection."""
from __future__ import annotations

import socket
import struct

from ternlib import wait_until


def _request(path: str, msg_type: int, payload: bytes = b"") -> tuple[int, bytes] | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(struct.pack(">IH", len(payload) + 2, msg_type) + payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
            if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
                length, kind = struct.unpack(">IH", data[:6])
                return kind, data[6:4 + length]


def _strings(buf: bytes, pos: int) -> tuple[list[str], int]:
    (count,) = struct.unpack_from(">I", buf, pos)
    pos += 4
    out = []
    for _ in range(count):
        (n,) = struct.unpack_from(">I", buf, pos)
        out.append(buf[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    return out, pos


def _domains(tern) -> tuple[int, list[str], list[str]]:
    kind, payload = _request(str(tern.data_dir / "run" / "directory.sock"), 24)
    assert kind == 25
    status = payload[0]
    domains, pos = _strings(payload, 1)
    aliases, pos = _strings(payload, pos)
    return status, domains, aliases


def test_domain_list_follows_the_cli_without_reload(tern):
    assert _domains(tern) == (0, ["example.test"], [])
    tern.cli("domain", "add", "second.example", check=True)
    tern.cli("domain", "alias", "add", "example.net", "example.test", check=True)
    assert _domains(tern) == (0, ["example.test", "second.example"], ["example.net=example.test"])
    tern.cli("domain", "set", "second.example", "--disable", check=True)
    assert _domains(tern) == (0, ["example.test"], ["example.net=example.test"])


def test_malformed_frame_closes_that_connection_only(tern):
    path = str(tern.data_dir / "run" / "directory.sock")
    assert _request(path, 999, b"junk") is None
    tern.wait_log(r"directory warn malformed request; closing the connection")
    wait_until(lambda: _domains(tern)[1] == ["example.test"], message="the service still answering")
