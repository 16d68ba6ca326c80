"""A docker-style push (streamed ``PATCH`` + empty ``PUT``) through the proxy lands in
one upstream write with ``transport.lean_bodies`` on (the PATCH goes on the lean pool's
connection, which is pooled again after) and off (httpx sends it, as before)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from proxy.upstream.lean import LeanTransport
from testkit.images import make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"


def _pieces(data: bytes, size: int = 170_000) -> Iterator[bytes]:
    """No Content-Length: chunked, as docker sends a layer."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@pytest.mark.parametrize("lean", ["true", "false"])
def test_a_streamed_push_lands_in_one_write(
    lean: str, fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")
    running = proxy(fake.upstream, transport__lean_bodies=lean)
    data = make_layer(size=3 * 1024 * 1024 + 5, seed=7)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=running.url, timeout=30) as http:
        location = http.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
        written = http.patch(location, content=_pieces(data))
        assert written.status_code == 202, written.text
        done = http.put(written.headers["location"], params={"digest": digest})
        assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes(digest) == 1
    transport = running.services.upstream.http._transport
    if lean == "true":  # the PATCH's connection went back to the lean pool
        assert isinstance(transport, LeanTransport) and transport.idle_count() == 1
    else:
        assert not isinstance(transport, LeanTransport)
