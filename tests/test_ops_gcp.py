"""With real google-auth against the fake OAuth endpoint: /readyz and the status page
name the credential source and when its token is refreshed, never the token, and
/metrics counts the refresh."""

from __future__ import annotations

from pathlib import Path

import httpx

from testkit.fakes.google import FakeOAuth
from tests.test_gcp_end_to_end import gar, issued_token, key_file, oauth, start
from tests.test_ops_metrics import scrape, value

__all__ = ["key_file", "oauth"]  # fixtures, used by name


def test_credential_source_and_token_refresh_are_shown_never_the_token(
    oauth: FakeOAuth, key_file: Path, tmp_path: Path
) -> None:
    fake = gar(oauth)
    with fake.serve() as url, start(tmp_path, url, key_file) as proxy:
        ready = httpx.get(proxy.url + "/readyz", timeout=30)
        page = httpx.get(proxy.url + "/", timeout=30).text
        samples = scrape(proxy.url)
    assert ready.status_code == 200, ready.text
    credentials = ready.json()["checks"]["credentials"]
    assert credentials["source"] == f"key file {key_file}"
    assert 0 < credentials["token_refresh_in_s"] <= 3600
    assert f"Google credentials from key file {key_file}" in page
    assert "refreshed in" in page
    token = issued_token(oauth)
    assert token not in page and token not in ready.text
    assert value(samples, "garproxy_token_refreshes_total", kind="google") == 1
    assert value(samples, "garproxy_credential_failures_total", kind="google") == 0
