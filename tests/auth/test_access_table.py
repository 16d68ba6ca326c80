"""Access control on every path, table-driven: identity x route x name spelling x method.

Rules are judged on the repository as GAR knows it, after mirrors (``?ns=``, a mirror's
own listener, a host in the name) and locations. Every denial is a 403 (401 without
credentials) that is the same for a repository that exists and one that does not, and
names nothing the caller did not send. Setup: ``tests/auth/accesskit.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from proxy.auth.rules import rule_path
from tests.auth.accesskit import Answer, Setup, basic, call, seeded_proxy

UPLOAD_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    # Failed logins are throttled per address (tests/auth/test_login_cost.py): here
    # every test comes from 127.0.0.1, so the bucket is made deep enough for all.
    directory = tmp_path_factory.mktemp("access")
    with seeded_proxy(directory, access__failed_login_burst="1000") as seeded:
        yield seeded


@dataclass(frozen=True)
class Spelling:
    """A client's name for a repository: ``/v2/{name}/...{?query}`` on ``socket``."""

    label: str
    name: str
    upstream: str  # the repository as GAR knows it
    missing: str  # the same spelling of a sibling that does not exist
    query: str = ""
    socket: str = "main"  # or "hub": the docker.io mirror's own listener

    def base(self, setup: Setup) -> str:
        return setup.hub_socket if self.socket == "hub" else setup.url


SECRET = [  # alpha/secret/app: only root may pull it
    Spelling("plain", "alpha/secret/app", "alpha/secret/app", "alpha/secret/nope"),
    Spelling("host-qualified", "us-docker.pkg.dev/alpha/secret/app", "alpha/secret/app",
             "us-docker.pkg.dev/alpha/secret/nope"),
    Spelling("upper-case host", "US-DOCKER.PKG.DEV/alpha/secret/app", "alpha/secret/app",
             "US-DOCKER.PKG.DEV/alpha/secret/nope"),
    Spelling("percent-encoded slashes", "alpha%2Fsecret%2Fapp", "alpha/secret/app",
             "alpha%2Fsecret%2Fnope"),
    Spelling("percent-encoded host", "us-docker%2Epkg%2Edev/alpha/secret/app",
             "alpha/secret/app", "us-docker%2Epkg%2Edev/alpha/secret/nope"),
    Spelling("ns naming a GAR host", "alpha/secret/app", "alpha/secret/app",
             "alpha/secret/nope", "ns=us-docker.pkg.dev"),
    Spelling("regional host", "docker.us.rep.pkg.dev/alpha/secret/app", "alpha/secret/app",
             "docker.us.rep.pkg.dev/alpha/secret/nope"),
    Spelling("ns naming a regional host", "alpha/secret/app", "alpha/secret/app",
             "alpha/secret/nope", "ns=DOCKER.US.REP.PKG.DEV"),
]  # fmt: skip
HUB = [  # gamma/hub/library/alpine: hubber, builder and root may pull it
    Spelling("GAR name", "gamma/hub/library/alpine", "gamma/hub/library/alpine",
             "gamma/hub/library/nope"),
    Spelling("ns", "library/alpine", "gamma/hub/library/alpine", "library/nope", "ns=docker.io"),
    Spelling("ns, official image", "alpine", "gamma/hub/library/alpine", "nope",
             "ns=docker.io"),
    Spelling("ns alias", "alpine", "gamma/hub/library/alpine", "nope",
             "ns=registry-1.docker.io"),
    Spelling("ns upper case", "library/alpine", "gamma/hub/library/alpine", "library/nope",
             "ns=DOCKER.IO"),
    Spelling("host-qualified", "docker.io/library/alpine", "gamma/hub/library/alpine",
             "docker.io/library/nope"),
    Spelling("alias host", "index.docker.io/library/alpine", "gamma/hub/library/alpine",
             "index.docker.io/library/nope"),
    Spelling("mirror listener", "library/alpine", "gamma/hub/library/alpine", "library/nope",
             socket="hub"),
]  # fmt: skip
ELSEWHERE = [  # alice's own names, which a mirror maps out of alpha/team
    Spelling("alice's name with ns", "alpha/team/app", "gamma/hub/alpha/team/app",
             "alpha/team/nope", "ns=docker.io"),
    Spelling("alice's name on the mirror listener", "alpha/team/app",
             "gamma/hub/alpha/team/app", "alpha/team/nope", socket="hub"),
    Spelling("alice's name under another mirror", "ghcr.io/alpha/team/app",
             "gamma/ghcr/alpha/team/app", "ghcr.io/alpha/team/nope"),
]  # fmt: skip
TAGS = {"alpha/secret/app": "v1", "gamma/hub/library/alpine": "3"}
PULLS = [
    ("GET", "manifests/{tag}"),
    ("HEAD", "manifests/{tag}"),
    ("GET", "blobs/{layer}"),
    ("HEAD", "blobs/{layer}"),
    ("GET", "tags/list"),
    ("GET", "referrers/{layer}"),
]
PUSHES = [
    ("POST", "blobs/uploads/"),
    ("POST", "blobs/uploads"),
    ("POST", "blobs/uploads/?mount={layer}&from=alpha/team/app"),
    ("POST", "blobs/uploads/?digest={layer}"),
    ("PUT", "manifests/pushed"),
    ("DELETE", "manifests/{tag}"),
    ("GET", f"blobs/uploads/{UPLOAD_ID}"),
    ("PATCH", f"blobs/uploads/{UPLOAD_ID}"),
    ("PUT", f"blobs/uploads/{UPLOAD_ID}?digest={{layer}}"),
    ("DELETE", f"blobs/uploads/{UPLOAD_ID}"),
]


def _target(spelling: Spelling, name: str, suffix: str, setup: Setup) -> str:
    known = spelling.upstream if spelling.upstream in setup.images else "alpha/team/app"
    filled = suffix.format(tag=TAGS.get(known, "v1"), layer=setup.layer(known))
    joiner = "&" if "?" in filled else "?"
    query = f"{joiner}{spelling.query}" if spelling.query else ""
    return f"/v2/{name}/{filled}{query}"


def _send(setup: Setup, spelling: Spelling, name: str, method: str, suffix: str,
          who: str) -> Answer:  # fmt: skip
    body = b"{}" if method in ("PUT", "PATCH") else None
    return call(spelling.base(setup), method, _target(spelling, name, suffix, setup),
                basic(who), body)  # fmt: skip


def _assert_denied(answer: Answer, method: str, spelling: Spelling, what: str) -> None:
    assert answer.status == 403, (what, answer.status, answer.body[:300])
    if method == "HEAD":
        assert answer.body == b"", what
        return
    assert answer.code == "DENIED", (what, answer.body[:300])
    text = answer.body.decode()
    # The refusal names what the client sent, never what it maps to.
    for hidden in ("gamma", "secret", "ghcr/"):
        if hidden not in spelling.name.lower():
            assert hidden not in text, (what, text)


@pytest.mark.parametrize("spelling", SECRET + HUB + ELSEWHERE, ids=lambda s: s.label)
def test_every_spelling_of_a_repository_meets_the_rule_for_it_as_gar_knows_it(
    setup: Setup, spelling: Spelling
) -> None:
    """alice, lead (admin, pulls alpha/team only) and mallory are refused every route
    and method on each spelling, and a sibling that does not exist gets the same answer
    (no existence oracle), HEAD as GET."""
    hub = "gamma/hub/" in spelling.upstream
    who_may_pull = {"root", "hubber", "builder"} if hub else {"root"}
    for who in ("alice", "lead", "mallory", "hubber", "builder"):
        for method, suffix in PULLS + PUSHES:
            if who in who_may_pull and (method, suffix) in PULLS:
                continue  # allowed: test_allowed_spellings_reach_the_image
            what = f"{who} {method} {spelling.label} {suffix}"
            answer = _send(setup, spelling, spelling.name, method, suffix, who)
            _assert_denied(answer, method, spelling, what)
            sibling = _send(setup, spelling, spelling.missing, method, suffix, who)
            assert (sibling.status, sibling.code) == (answer.status, answer.code), what


@pytest.mark.parametrize("spelling", HUB, ids=lambda s: s.label)
def test_allowed_spellings_reach_the_image(setup: Setup, spelling: Spelling) -> None:
    alpine = setup.images["gamma/hub/library/alpine"]
    for who in ("hubber", "builder", "root"):
        got = _send(setup, spelling, spelling.name, "GET", "manifests/{tag}", who)
        assert got.status == 200 and got.headers["docker-content-digest"] == alpine.digest
        blob = _send(setup, spelling, spelling.name, "GET", "blobs/{layer}", who)
        assert blob.status == 200 and blob.body == alpine.layers[0].data
    pushed = _send(setup, spelling, spelling.name, "POST", "blobs/uploads/", "hubber")
    _assert_denied(pushed, "POST", spelling, "hubber may not push the mirror")


@pytest.mark.parametrize(
    "name", ["alpha/team/app", "us-docker.pkg.dev/alpha/team/app", "alpha%2Fteam%2Fapp"]
)
def test_an_identity_reads_and_writes_its_own_repository_by_any_spelling(
    setup: Setup, name: str
) -> None:
    got = call(setup.url, "GET", f"/v2/{name}/manifests/v1", basic("alice"))
    assert got.status == 200, got.body[:300]
    assert got.headers["docker-content-digest"] == setup.images["alpha/team/app"].digest
    started = call(setup.url, "POST", f"/v2/{name}/blobs/uploads/", basic("alice"))
    assert started.status == 202, started.body[:300]
    assert call(setup.url, "DELETE", started.headers["location"], basic("alice")).status == 204


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("dot segments", "alpha/team/../secret/app"),
        ("encoded dot segments", "alpha/team/%2E%2E/secret/app"),
        ("encoded slashes and dots", "alpha/team%2F..%2Fsecret/app"),
        ("NUL", "alpha/secret/app%00"),
        ("overlong slash", "alpha%C0%AFsecret/app"),
        ("fullwidth slash", "alpha%EF%BC%8Fsecret/app"),
        ("double slash", "alpha//secret/app"),
        ("semicolon parameter", "alpha/secret/app;v=1"),
        ("upper case", "Alpha/secret/app"),
        ("very long", "alpha/secret/" + "a" * 400),
        ("empty", ""),
        ("trailing dot", "alpha/secret/app."),
    ],
)
def test_odd_names_are_refused_alike_for_what_exists_and_what_does_not(
    setup: Setup, label: str, name: str
) -> None:
    for method, suffix in (("GET", "manifests/v1"), ("HEAD", "manifests/v1"),
                           ("GET", "tags/list"), ("POST", "blobs/uploads/")):  # fmt: skip
        answer = call(setup.url, method, f"/v2/{name}/{suffix}", basic("alice"))
        missing = call(setup.url, method, f"/v2/{name.replace('app', 'nope')}/{suffix}",
                       basic("alice"))  # fmt: skip
        assert 400 <= answer.status < 500, (label, method, answer.status)
        assert (answer.status, answer.code) == (missing.status, missing.code), label
        if method != "HEAD" and answer.body:
            assert "secret-app" not in answer.body.decode()


def test_a_trailing_slash_says_nothing_about_what_exists(setup: Setup) -> None:
    for name in ("alpha/secret/app", "alpha/secret/nope"):
        answer = call(setup.url, "GET", f"/v2/{name}/manifests/v1/", basic("alice"))
        assert answer.status in (307, 404), answer.status
        if answer.status == 307:  # Starlette's redirect to the route: judged there
            target = urlpath(answer.headers["location"])
            assert call(setup.url, "GET", target, basic("alice")).status == 403


def urlpath(location: str) -> str:
    return re.sub(r"^https?://[^/]+", "", location)


# --- mounts: every form of ``from`` -------------------------------------------------


def _mount(setup: Setup, who: str, layer_of: str, query: str, target: str = "alpha/team/app"
           ) -> Answer:  # fmt: skip
    digest = setup.layer(layer_of)
    path = f"/v2/{target}/blobs/uploads/?mount={digest}{query}"
    return call(setup.url, "POST", path, basic(who))


def _linked(setup: Setup, repo: str, layer_of: str) -> bool:
    return setup.fake.get_blob("us", repo, setup.layer(layer_of)) is not None


@pytest.mark.parametrize(
    ("label", "layer_of", "query"),
    [
        ("no from", "alpha/secret/app", ""),
        ("empty from", "alpha/secret/app", "&from="),
        ("unreadable from", "alpha/secret/app", "&from=alpha/secret/app"),
        ("unreadable from, host-qualified", "alpha/secret/app",
         "&from=us-docker.pkg.dev/alpha/secret/app"),
        ("unreadable from, percent-encoded", "alpha/secret/app",
         "&from=alpha%2Fsecret%2Fapp"),
        ("another mirror's spelling", "gamma/hub/library/alpine",
         "&from=docker.io/library/alpine"),
        ("unreadable from, GAR name of a mirror", "gamma/hub/library/alpine",
         "&from=gamma/hub/library/alpine"),
        ("from naming an unmirrored registry", "alpha/team/other", "&from=quay.io/x/y"),
        ("from not a name", "alpha/team/other", "&from=Not/A/Name"),
        ("from too short for GAR", "alpha/team/other", "&from=alpha/team"),
    ],
)  # fmt: skip
def test_a_mount_from_what_the_caller_may_not_read_is_a_plain_upload(
    setup: Setup, label: str, layer_of: str, query: str
) -> None:
    """alice may push alpha/team but read neither alpha/secret nor the mirror: her mount
    is an upload session (202, as a registry without access to ``from`` answers), and
    the blob does not appear in her repository upstream."""
    answer = _mount(setup, "alice", layer_of, query)
    assert answer.status == 202, (label, answer.status, answer.body[:300])
    assert re.fullmatch(r"/v2/alpha/team/app/blobs/uploads/[0-9a-f]{32}",
                        answer.headers["location"]), label  # fmt: skip
    assert not _linked(setup, "alpha/team/app", layer_of), label
    call(setup.url, "DELETE", answer.headers["location"], basic("alice"))


def test_a_mount_from_a_readable_repository_mounts(setup: Setup) -> None:
    answer = _mount(setup, "alice", "alpha/team/other", "&from=alpha/team/other")
    assert answer.status == 201, answer.body[:300]
    assert _linked(setup, "alpha/team/app", "alpha/team/other")
    # builder may read the mirror: its blob is copied across projects.
    mirrored = _mount(setup, "builder", "gamma/hub/library/alpine",
                      "&from=docker.io/library/alpine", target="alpha/team/other")  # fmt: skip
    assert mirrored.status == 201, mirrored.body[:300]
    assert _linked(setup, "alpha/team/other", "gamma/hub/library/alpine")


def test_a_readable_from_lends_nothing_it_does_not_hold(setup: Setup) -> None:
    """The secret layer is in the proxy's cache (root pulled it) but not in
    alpha/team/other: naming a readable ``from`` does not reach it."""
    answer = _mount(setup, "alice", "alpha/secret/app", "&from=alpha/team/other")
    assert answer.status == 202, answer.body[:300]
    assert not _linked(setup, "alpha/team/app", "alpha/secret/app")
    call(setup.url, "DELETE", answer.headers["location"], basic("alice"))


@pytest.mark.parametrize(
    "query",
    ["&from=alpha/team/other&from=alpha/secret/app",
     "&from=alpha/secret/app&from=alpha/team/other",
     "&from=alpha/team/other&mount=sha256:" + "0" * 64,
     "&from=alpha/team/other&ns=docker.io&ns=ghcr.io"],
)  # fmt: skip
def test_a_repeated_parameter_is_refused_not_guessed(setup: Setup, query: str) -> None:
    before = setup.fake.count("POST")
    answer = _mount(setup, "alice", "alpha/secret/app", query)
    assert answer.status == 400 and answer.code == "QUERY_INVALID", answer.body[:300]
    assert setup.fake.count("POST") == before  # nothing reached upstream


def test_a_mount_into_a_mirrored_name_is_a_push_to_the_mirror(setup: Setup) -> None:
    answer = _mount(setup, "alice", "alpha/team/other", "&from=alpha/team/other&ns=docker.io")
    assert answer.status == 403 and answer.code == "DENIED"


@pytest.mark.parametrize(
    "target",
    ["/v2/alpha/team/app/manifests/v1?ns=docker.io&ns=docker.io",
     "/v2/alpha/team/app/tags/list?n=1&n=2",
     "/v2/alpha/team/app/tags/list?last=a&last=b",
     "/v2/_catalog?n=1&n=1",
     "/v2/_catalog?last=a&last=",
     f"/v2/alpha/team/app/blobs/uploads/{UPLOAD_ID}?digest=sha256:{'0' * 64}&digest=x"],
)  # fmt: skip
def test_repeated_parameters_everywhere_are_a_clear_400(setup: Setup, target: str) -> None:
    method = "PUT" if "uploads" in target else "GET"
    answer = call(setup.url, method, target, basic("alice"))
    assert answer.status == 400 and answer.code == "QUERY_INVALID", answer.body[:300]
    assert "given 2 times" in answer.body.decode()


# --- listings ------------------------------------------------------------------------


def _catalog(setup: Setup, who: str, query: str = "") -> Answer:
    return call(setup.url, "GET", f"/v2/_catalog{query}", basic(who))


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("alice", {"alpha/team/app", "alpha/team/other"}),
        ("hubber", {"gamma/hub/library/alpine"}),
        ("mallory", set()),
        ("lead", {"alpha/team/app", "alpha/team/other", "alpha/secret/app",
                  "gamma/hub/library/alpine", "gamma/ghcr/org/tool"}),  # an admin: all
        ("root", {"alpha/team/app", "alpha/team/other", "alpha/secret/app",
                  "gamma/hub/library/alpine", "gamma/ghcr/org/tool"}),
    ],
)  # fmt: skip
def test_the_catalog_lists_what_the_caller_may_pull(
    setup: Setup, who: str, expected: set[str]
) -> None:
    listed = json.loads(_catalog(setup, who).body)["repositories"]
    assert {rule_path(name) for name in listed} >= expected
    if who not in ("lead", "root"):
        assert {rule_path(name) for name in listed} == expected


def test_catalog_pages_hold_only_visible_names(setup: Setup) -> None:
    first = _catalog(setup, "alice", "?n=1")
    (name,) = json.loads(first.body)["repositories"]
    link = first.headers["link"]
    assert "secret" not in link and "gamma" not in link
    second = call(setup.url, "GET", urlpath(link.split(">")[0].lstrip("<")), basic("alice"))
    rest = json.loads(second.body)["repositories"]
    assert [rule_path(n) for n in [name, *rest]] == ["alpha/team/app", "alpha/team/other"]
    assert "link" not in second.headers


def test_the_status_page_lists_what_the_caller_may_pull(setup: Setup) -> None:
    def table(who: str) -> str:
        page = call(setup.url, "GET", "/", basic(who)).body.decode()
        return page.split('id="top-repositories"')[1].split("</table>")[0]

    alice, root = table("alice"), table("root")
    assert "alpha/team/app" in alice and "secret" not in alice and "gamma" not in alice
    for repo in ("alpha/team/app", "alpha/secret/app", "gamma/hub/library/alpine"):
        assert repo in root
    assert call(setup.url, "GET", "/", {}).status == 401


# --- upload sessions, admin paths, credentials ---------------------------------------


def test_an_upload_session_belongs_to_its_repository(setup: Setup) -> None:
    started = call(setup.url, "POST", "/v2/alpha/team/app/blobs/uploads/", basic("alice"))
    assert started.status == 202
    session_id = started.headers["location"].rsplit("/", 1)[1]
    other = call(setup.url, "GET", f"/v2/alpha/team/other/blobs/uploads/{session_id}",
                 basic("alice"))  # fmt: skip
    assert other.status == 404 and other.code == "BLOB_UPLOAD_UNKNOWN"
    for name in ("alpha/secret/app", "alpha/secret/nope"):
        secret = call(setup.url, "GET", f"/v2/{name}/blobs/uploads/{session_id}",
                      basic("alice"))  # fmt: skip
        assert secret.status == 403 and secret.code == "DENIED"
    puller = call(setup.url, "GET", started.headers["location"], basic("hubber"))
    assert puller.status == 403
    assert call(setup.url, "DELETE", started.headers["location"], basic("alice")).status == 204


@pytest.mark.parametrize(
    ("who", "path", "refused"),
    [
        ("alice", "/_gar-proxy/where/alpha/team", True),  # not an admin
        ("lead", "/_gar-proxy/where/alpha/secret", True),  # an admin, not a puller of it
        ("lead", "/_gar-proxy/vulns/alpha/secret/app:v1", True),
        ("lead", "/_gar-proxy/sbom/us-docker.pkg.dev/alpha/secret/app:v1", True),
        ("lead", "/_gar-proxy/cleanup-preview/alpha/us/secret", True),
        ("lead", "/_gar-proxy/vulns/alpha/team/app:v1", False),
        ("root", "/_gar-proxy/vulns/alpha/secret/app:v1", False),
    ],
)
def test_admin_paths_need_an_admin_who_may_pull_the_image(
    setup: Setup, who: str, path: str, refused: bool
) -> None:
    answer = call(setup.url, "GET", path, basic(who))
    if refused:
        assert answer.status == 403 and answer.code == "DENIED", answer.body[:300]
    else:
        assert answer.status not in (401, 403), answer.body[:300]


@pytest.mark.parametrize(
    "path",
    ["/v2/", "/v2/_catalog", "/v2/alpha/team/app/manifests/v1", "/v2/alpha/secret/nope/tags/list",
     "/", "/_gar-proxy/where/alpha/team"],
)  # fmt: skip
def test_without_good_credentials_every_path_is_a_challenge(setup: Setup, path: str) -> None:
    for headers in ({}, basic("alice", "wrong-pw"), {"Authorization": "Bearer nope-token"}):
        answer = call(setup.url, "GET", path, headers)
        assert answer.status == 401 and answer.code == "UNAUTHORIZED", (path, headers)
        assert answer.headers["www-authenticate"] == 'Basic realm="gar-proxy"'
    assert call(setup.url, "GET", "/healthz").status == 200
