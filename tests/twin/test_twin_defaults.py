"""The twin's defaults are the evidence's reading (docs/GAR.md), checked on the wire.

Its knobs try the answers the record leaves open; with none turned it must answer as
the record says GAR does, or the variants are departures from a wrong starting point.
"""

from __future__ import annotations

import base64
import hashlib

import httpx

from testkit.images import build_image, make_layer
from tests.twin.conftest import TOKEN, TwinFactory

NAME = "proj/repo/app"


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_defaults_answer_as_the_record_says(twin: TwinFactory) -> None:
    served = twin()
    image = build_image([make_layer(seed=71)])
    served.put_image(NAME, "v1", image)
    with httpx.Client(base_url=served.url, timeout=30) as http:
        ping = http.get("/v2/")  # A1: a realm on the same host, no service
        assert ping.status_code == 401
        assert ping.headers["www-authenticate"] == f'Bearer realm="{served.url}/v2/token"'
        assert http.get("/v2/token").status_code == 403  # A4: anonymous
        assert http.get("/v2/token", headers=basic("oauth2accesstoken", "no")).status_code == 401
        scope = {"scope": f"repository:{NAME}:push,pull"}
        for user in ("oauth2accesstoken", "_token"):  # A3
            got = http.get("/v2/token", params=scope, headers=basic(user, TOKEN))
            assert set(got.json()) == {"token", "expires_in", "issued_at"}  # A12
        auth = {"Authorization": f"Bearer {TOKEN}"}  # A2: the access token itself
        missing = http.get("/v2/proj/nope/app/manifests/v1", headers=auth)
        assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        blob = http.get(f"/v2/{NAME}/blobs/{image.layers[0].digest}", headers=auth)
        location = blob.headers["location"]  # D1: 302, relative, GAR's host
        assert blob.status_code == 302 and location.startswith("/artifacts-downloads/")
        assert http.get(location).content == image.layers[0].data  # no Authorization
        started = http.post(f"/v2/{NAME}/blobs/uploads/", headers=auth)
        session = started.headers["location"]  # U1: relative, outside /v2/, opaque
        assert started.status_code == 202 and session.startswith("/artifacts-uploads/")
        assert len(session.rsplit("/", 1)[1]) >= 200
        data = b"one write" * 100
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        patched = http.patch(session, content=data)  # U3: no Authorization
        again = http.patch(patched.headers["location"], content=data)  # U5: one write
        assert (patched.status_code, again.status_code) == (202, 400)
        landed = http.put(patched.headers["location"], params={"digest": digest})
        assert landed.status_code == 201 and landed.headers["docker-content-digest"] == digest
        tags = http.get(f"/v2/{NAME}/tags/list", headers=auth).json()  # N3: GCR-shaped
        assert set(tags) == {"child", "manifest", "name", "tags"} and tags["tags"] == ["v1"]
    assert served.writes == [1]
