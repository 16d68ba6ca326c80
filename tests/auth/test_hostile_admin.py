"""Admin paths judge the image they act on: refresh and purge resolve a client's name
(a mirrored registry's included) once, and the rule is met on that.

The guard read ``docker.io/library/alpine`` as a GAR name (a domain-scoped project
needs four parts: NAME_INVALID), while refresh and purge resolve it through the
mirrors (``gamma/hub/library/alpine``): an admin who may pull the mirror could not
refresh it by the name its clients use, and what was judged was not what was acted on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.accesskit import Setup, basic, call, seeded_proxy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("hostile-admin")
    with seeded_proxy(directory, access__failed_login_burst="1000") as seeded:
        yield seeded


@pytest.mark.parametrize(
    "image", ["docker.io/library/alpine:3", "index.docker.io/library/alpine:3",
              "gamma/hub/library/alpine:3", "us-docker.pkg.dev/gamma/hub/library/alpine:3"]
)  # fmt: skip
def test_an_admin_refreshes_a_mirrored_image_by_any_name_it_may_pull(
    setup: Setup, image: str
) -> None:
    answer = call(setup.url, "POST", f"/_gar-proxy/refresh/{image}", basic("ops"))
    assert answer.status == 200, answer.body[:300]
    assert b"gamma/hub/library/alpine" in answer.body


@pytest.mark.parametrize("action", ["refresh", "purge"])
@pytest.mark.parametrize(
    "image", ["docker.io/library/alpine:3", "gamma/hub/library/alpine:3",
              "ghcr.io/org/tool:1", "alpha/secret/app:v1"]
)  # fmt: skip
def test_an_admin_acts_on_nothing_it_may_not_pull_by_any_name(
    setup: Setup, action: str, image: str
) -> None:
    """lead is an admin who may pull alpha/team only."""
    answer = call(setup.url, "POST", f"/_gar-proxy/{action}/{image}", basic("lead"))
    assert answer.status == 403 and answer.code == "DENIED", answer.body[:300]
    assert b"gamma" not in answer.body or b"gamma" in image.encode()
    cached = call(setup.url, "GET", "/v2/_catalog", basic("root")).body
    assert b"alpha/secret/app" in cached and b"gamma/hub/library/alpine" in cached


def test_the_status_page_shows_the_upstream_and_its_credentials_to_admins_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As ``/readyz``'s detail: which registry and which credentials the proxy uses are
    for admins (and loopback clients), not for every identity that logs in. The
    clients here come through a front proxy on loopback, from elsewhere."""
    directory = tmp_path_factory.mktemp("status")
    with seeded_proxy(directory, server__trusted_proxies="127.0.0.1") as setup:
        upstream = setup.proxy.settings.upstream.url.split("//", 1)[1]
        remote = {"X-Forwarded-For": "198.51.100.7"}

        def upstream_table(who: str) -> str:
            page = call(setup.url, "GET", "/", {**basic(who), **remote}).body.decode()
            return page.split("<h2>Upstream</h2>")[1].split("</table>")[0]

        for admin in ("root", "lead", "ops"):
            shown = upstream_table(admin)
            assert upstream in shown and "upstream.auth = none" in shown, shown
        for who in ("alice", "mallory", "hubber"):
            hidden = upstream_table(who)
            assert upstream not in hidden and "upstream.auth" not in hidden, hidden
            assert "shown to admin identities" in hidden
            readyz = call(setup.url, "GET", "/readyz", {**basic(who), **remote}).body.decode()
            assert upstream not in readyz and "shown to admin identities" in readyz
