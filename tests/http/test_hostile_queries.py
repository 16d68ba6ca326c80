"""Query strings a hostile client sends: every one a clear 400, nothing upstream.

``n`` (the page size of ``/v2/_catalog`` and of tag lists) once took anything Python's
``str.isdigit`` calls a digit: ``²`` made ``int()`` raise (500 UNKNOWN with a logged
traceback), and so did 5,000 ASCII digits (``int()`` refuses more than 4,300); a tag
list passed any ``n`` upstream as it came (the fake GAR answered 500 to ``²``, which
the proxy retried four times). Now ``n`` is 1 to 9 ASCII digits, read once by
``proxy.http.query``, or a 400 ``PAGINATION_NUMBER_INVALID``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.http.query import MAX_QUERY_BYTES
from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
BAD_N = ["%C2%B2", "%D9%A1", "9" * 5000, "-1", "1e3", "0x10", "+5", "%201", "1234567890"]


@pytest.mark.parametrize("n", BAD_N, ids=lambda n: n[:12])
def test_a_page_size_that_is_not_a_small_number_is_a_clear_400(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path, n: str
) -> None:
    fake = fake_gar(auth="none")
    fake.put_image("us", REPO, "v1", build_image([make_layer(seed=1)]))
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        before = fake.count()
        for path in ("/v2/_catalog", f"/v2/{REPO}/tags/list"):
            answer = http.get(f"{path}?n={n}")
            assert answer.status_code == 400, (path, answer.text[:300])
            assert answer.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        assert fake.count() == before  # refused before any upstream call
        assert http.get(f"/v2/{REPO}/tags/list?n=1").status_code == 200
        assert http.get("/v2/_catalog?n=999999999").status_code == 200


def test_a_query_at_the_cap_is_parsed_and_one_past_it_refused(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    running = proxy(fake_gar(auth="none").upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        base = "/v2/_catalog?n=1&pad="
        at_cap = base + "a" * (MAX_QUERY_BYTES - len(base) + len("/v2/_catalog?"))
        assert len(at_cap.partition("?")[2]) == MAX_QUERY_BYTES
        assert http.get(at_cap).status_code == 200
        over = http.get(at_cap + "a")
        assert over.status_code == 400 and over.json()["errors"][0]["code"] == "QUERY_INVALID"
