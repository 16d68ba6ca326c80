"""Access control as clients meet it: the proxy on loopback, the fake GAR upstream."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from proxy.auth.access import permitted
from proxy.auth.middleware import AccessControl, AccessPolicy
from proxy.config import load_settings
from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

RULES = """
[identities.alice]
pull = ["proj/repo"]
push = ["proj/repo/team-a"]
admin = true

[identities.ci]
pull = ["proj/repo/app"]
"""


def _auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ALICE = _auth("alice", "alice-pw")
BOB = _auth("bob", "bob-pw")  # in htpasswd, not in the rules: may do nothing


def access_files(tmp_path: Path) -> dict[str, str]:
    def line(user: str, password: str) -> str:
        return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"

    (tmp_path / "htpasswd").write_text(f"{line('alice', 'alice-pw')}\n{line('bob', 'bob-pw')}\n")
    (tmp_path / "tokens").write_text("ci:ci-token-1\n")
    (tmp_path / "rules.toml").write_text(RULES)
    return {
        "access__htpasswd_file": str(tmp_path / "htpasswd"),
        "access__tokens_file": str(tmp_path / "tokens"),
        "access__rules_file": str(tmp_path / "rules.toml"),
    }


@pytest.fixture
def proxy_url(fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path) -> str:
    fake = fake_gar(auth="none")
    fake.put_image("us", "proj/repo/app", "v1", build_image([make_layer(seed=3)]))
    return proxy(fake.upstream, **access_files(tmp_path)).url


def test_the_ping_challenges_the_registry_way(proxy_url: str) -> None:
    answer = httpx.get(f"{proxy_url}/v2/")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="gar-proxy"'
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert httpx.get(f"{proxy_url}/v2/", headers=ALICE).status_code == 200
    wrong = httpx.get(f"{proxy_url}/v2/", headers=_auth("alice", "nope"))
    assert wrong.status_code == 401 and "www-authenticate" in wrong.headers
    assert httpx.get(f"{proxy_url}/healthz").status_code == 200
    assert httpx.get(f"{proxy_url}/metrics").status_code == 200  # metrics_public


def test_pull_and_push_follow_the_rules(proxy_url: str) -> None:
    manifest = f"{proxy_url}/v2/proj/repo/app/manifests/v1"
    assert httpx.get(manifest).status_code == 401
    pulled = httpx.get(manifest, headers=ALICE)
    assert pulled.status_code == 200, pulled.text
    bearer = {"Authorization": "Bearer ci-token-1"}
    assert httpx.get(manifest, headers=bearer).status_code == 200
    assert httpx.get(manifest, headers=_auth("ci", "ci-token-1")).status_code == 200
    denied = httpx.get(manifest, headers=BOB)
    assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
    other = f"{proxy_url}/v2/proj/other/app/manifests/v1"
    assert httpx.get(other, headers=ALICE).status_code == 403
    # Host-qualified names are judged by the path upstream knows.
    qualified = f"{proxy_url}/v2/us-docker.pkg.dev/proj/other/app/manifests/v1"
    assert httpx.get(qualified, headers=ALICE).status_code == 403
    # Push: an upload start is a push; ci may pull app but not push it.
    upload = f"{proxy_url}/v2/proj/repo/app/blobs/uploads/"
    assert httpx.post(upload, headers=bearer).json()["errors"][0]["code"] == "DENIED"
    assert httpx.post(upload, headers=ALICE).status_code == 403
    started = httpx.post(f"{proxy_url}/v2/proj/repo/team-a/web/blobs/uploads/", headers=ALICE)
    assert started.status_code == 202, started.text
    gone = httpx.delete(f"{proxy_url}/v2/proj/repo/app/manifests/v1", headers=bearer)
    assert gone.status_code == 403


def test_admin_paths_are_for_admins(proxy_url: str) -> None:
    status = f"{proxy_url}/_gar-proxy/status"
    assert httpx.get(status).status_code == 401
    assert httpx.get(status, headers={"Authorization": "Bearer ci-token-1"}).status_code == 403
    # Past the check: the app answers (404 until an admin route exists there).
    assert httpx.get(status, headers=ALICE).status_code not in (401, 403)


async def test_without_client_auth_admin_is_loopback_only_and_identity_is_exposed(
    tmp_path: Path,
) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["state"]["identity"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    settings = load_settings(None, env={"HOME": str(tmp_path)})
    guarded = AccessControl(app, AccessPolicy(settings.access))
    for client, expected in ((("127.0.0.1", 1), 204), (("10.1.2.3", 1), 403)):
        transport = httpx.ASGITransport(guarded, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
            assert (await http.get("/_gar-proxy/gc")).status_code == expected
            assert (await http.get("/v2/p/r/i/manifests/v1")).status_code == 204
    assert seen == ["anonymous", "anonymous", "anonymous"]


async def test_with_rules_a_success_no_access_decision_let_through_fails_closed(
    tmp_path: Path,
) -> None:
    """A route that answers 2xx without asking (a bug) is refused by the middleware."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].endswith("/decided"):
            assert permitted(scope, "pull", "proj/repo/app")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the repository's secrets"})

    overrides = {k.replace("__", "."): v for k, v in access_files(tmp_path).items()}
    settings = load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)
    transport = httpx.ASGITransport(AccessControl(app, AccessPolicy(settings.access)))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
        forgot = await http.get("/v2/proj/repo/app/forgot", headers=ALICE)
        assert forgot.status_code == 500 and b"secrets" not in forgot.content
        decided = await http.get("/v2/proj/repo/app/decided", headers=ALICE)
        assert decided.status_code == 200 and decided.content == b"the repository's secrets"
        # Paths that need no decision: docker's login ping, health.
        assert (await http.get("/v2/", headers=ALICE)).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


def test_an_http11_request_needs_exactly_one_host(proxy_url: str) -> None:
    """RFC 9112 section 3.2: without Host, or with two, 400 (before credentials)."""
    port = int(proxy_url.rsplit(":", 1)[1])
    for head in (b"GET /v2/ HTTP/1.1\r\n", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b"Connection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"HOST_INVALID" in answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # HTTP/1.0 has no Host to need
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_heads_upload_sessions_and_private_metrics(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none")
    url = proxy(fake.upstream, access__metrics_public="false", **access_files(tmp_path)).url
    bearer = {"Authorization": "Bearer ci-token-1"}  # ci: pull proj/repo/app only
    head = httpx.head(f"{url}/v2/proj/other/app/manifests/v1", headers=bearer)
    assert head.status_code == 403 and head.content == b""
    assert httpx.head(f"{url}/v2/proj/other/app/manifests/v1").status_code == 401
    # Reading an upload session's status is a pusher's business, not a puller's.
    session = httpx.get(f"{url}/v2/proj/repo/app/blobs/uploads/abc", headers=bearer)
    assert session.status_code == 403
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers=bearer).status_code == 200


def test_anonymous_with_client_auth_gets_its_own_entry(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none")
    fake.put_image("us", "proj/public/base", "v1", build_image([make_layer(seed=5)]))
    fake.put_image("us", "proj/repo/app", "v1", build_image([make_layer(seed=6)]))
    files = access_files(tmp_path)
    with (tmp_path / "rules.toml").open("a") as rules:
        rules.write('\n[identities.anonymous]\npull = ["proj/public"]\n')
    url = proxy(fake.upstream, access__anonymous="true", **files).url
    assert httpx.get(f"{url}/v2/").status_code == 401  # login still sees the challenge
    assert httpx.get(f"{url}/v2/proj/public/base/manifests/v1").status_code == 200
    refused = httpx.get(f"{url}/v2/proj/repo/app/manifests/v1")
    assert refused.status_code == 401 and "www-authenticate" in refused.headers
    assert httpx.get(f"{url}/v2/proj/repo/app/manifests/v1", headers=ALICE).status_code == 200
