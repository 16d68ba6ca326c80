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
