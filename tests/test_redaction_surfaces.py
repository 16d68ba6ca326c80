"""Every surface that shows settings or upstream URLs, rendered with secrets set, shows
none of them: ``/readyz``, the status page, ``/metrics``, ``config check`` and every
log line of a served proxy, with a password in ``upstream.url``, ``upstream.password``
(basic) or a token file (bearer), and the clients' own tokens file."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from testkit.fakes.gar_model import Fault
from testkit.images import build_image, make_layer
from testkit.proxyprocess import ProxyProcess, run_cli
from tests.auth.accesskit import basic, write_access_files
from tests.conftest import FakeGarFactory

# Test secrets, to be found on no surface.
URL_PASSWORD = "url-pass-7f3a9c"
BASIC_PASSWORD = "basic-pass-41d2e8"
FILE_TOKEN = "file-token-0b9e77c1"
CLIENT_TOKEN = "ci-token-0123456789"  # accesskit's tokens file


def _settings_env(tmp_path: Path, mode: str) -> tuple[str, dict[str, str]]:
    """(auth, environment) for an upstream with secrets of kind ``mode``."""
    files = write_access_files(tmp_path).items()
    access = {f"GAR_PROXY_{k.upper().replace('__', '_')}": v for k, v in files}
    env = {**access, "GAR_PROXY_SERVER_LOG_LEVEL": "debug"}
    if mode == "basic":
        env |= {"GAR_PROXY_UPSTREAM_USERNAME": "bob", "GAR_PROXY_UPSTREAM_PASSWORD": BASIC_PASSWORD}
        return "basic", env
    token = tmp_path / "upstream-token"
    token.write_text(FILE_TOKEN + "\n")
    return "bearer", env | {"GAR_PROXY_UPSTREAM_TOKEN_FILE": str(token)}


def _leaks(text: str) -> list[str]:
    secrets = (URL_PASSWORD, BASIC_PASSWORD, FILE_TOKEN, CLIENT_TOKEN)
    return [s for s in secrets if s in text or quote(s, safe="") in text]


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_no_surface_shows_a_secret(fake_gar: FakeGarFactory, tmp_path: Path, mode: str) -> None:
    fake = fake_gar(auth="none")
    fake.put_image("us", "proj/repo/app", "v1", build_image([make_layer(seed=2)]))
    fake.add_fault(Fault(path=r"/proj/repo/broken/", status=500))  # an upstream error
    upstream = fake.upstream.replace("http://", f"http://bob:{URL_PASSWORD}@", 1)
    auth, env = _settings_env(tmp_path, mode)
    root, client = basic("root"), {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    surfaces: dict[str, str] = {}
    with ProxyProcess(tmp_path / "cache", upstream, auth=auth, env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get("/v2/proj/repo/app/manifests/v1", headers=root).status_code == 200
            http.get("/v2/proj/repo/broken/manifests/v1", headers=root)
            http.get("/v2/proj/repo/app/manifests/v1", headers=client)  # no rule: 403
            http.get("/v2/", headers=basic("root", BASIC_PASSWORD))  # a wrong password
            surfaces["/readyz"] = http.get("/readyz").text
            surfaces["/"] = http.get("/", headers=root).text
            surfaces["/metrics"] = http.get("/metrics").text
        proxy.stop()
        surfaces["log"] = proxy.log_text()
    check = run_cli(tmp_path / "cache", upstream, "config", "check", auth=auth, env=env)
    surfaces["config check"] = check.stdout + check.stderr
    # Each surface did render the upstream (so a miss is not from an empty page).
    assert "127.0.0.1" in surfaces["/readyz"] and "&lt;redacted&gt;@127.0.0.1" in surfaces["/"]
    assert "upstream.url" in surfaces["config check"] and "garproxy_" in surfaces["/metrics"]
    assert re.search(r"upstream .*127\.0\.0\.1", surfaces["log"])
    leaked = {name: found for name, text in surfaces.items() if (found := _leaks(text))}
    assert leaked == {}
