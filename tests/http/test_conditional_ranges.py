"""If-Range (RFC 9110 section 13.1.5): a Range is served only for the representation the
client names; any other validator (another entity tag, a weak one, a date: a blob has
no Last-Modified) gets the whole blob, 200. Cached and uncached blobs alike."""

from __future__ import annotations

import httpx
import pytest

from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory


@pytest.mark.parametrize("cached", [False, True])
def test_if_range_keeps_the_range_only_for_the_same_blob(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, cached: bool
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer(size=50_000, seed=9)])
    fake.put_image("us", "proj/repo/app", "v1", image)
    layer = image.layers[0]
    url = f"{proxy(fake.upstream).url}/v2/proj/repo/app/blobs/{layer.digest}"
    if cached:
        assert httpx.get(url).content == layer.data
    cases = {
        f'"{layer.digest}"': 206,
        '"sha256:' + "0" * 64 + '"': 200,
        f'W/"{layer.digest}"': 200,  # a weak validator never matches (strong comparison)
        "Sat, 29 Oct 1994 19:43:31 GMT": 200,
        layer.digest: 200,  # unquoted: not an entity tag
    }
    for if_range, status in cases.items():
        got = httpx.get(url, headers={"Range": "bytes=100-199", "If-Range": if_range})
        assert got.status_code == status, (if_range, got.status_code)
        if status == 206:
            assert got.content == layer.data[100:200]
            assert got.headers["content-range"] == f"bytes 100-199/{len(layer.data)}"
        else:
            assert got.content == layer.data and "content-range" not in got.headers
    plain = httpx.get(url, headers={"If-Range": "whatever"})  # no Range: ignored
    assert plain.status_code == 200 and plain.content == layer.data
