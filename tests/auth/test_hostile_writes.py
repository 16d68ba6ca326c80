"""Writes as a hostile client with real credentials tries them: what a push can make the
proxy copy out of its cache, and whose upload session a request may touch.

The cache is content addressed: a blob or manifest root pulled from ``alpha/secret`` sits
on the same disk as alice's. A manifest PUT naming it must not make the proxy write it
into alice's repository (from where she pulls it): the cache lends a write only what
the target repository already holds in its scope, or what a repository the caller may
pull holds. Setup: ``tests/auth/accesskit.py`` (alice pushes ``alpha/team``, builder
pushes it too and pulls ``gamma/hub``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.images import Blob, Image
from tests.auth.accesskit import Answer, Setup, basic, call, seeded_proxy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("hostile-writes")
    with seeded_proxy(directory, access__failed_login_burst="1000") as seeded:
        yield seeded


def _manifest(config: Blob, *layers: Blob) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return json.dumps(body).encode()


def _put(setup: Setup, who: str, repo: str, tag: str, body: bytes, media_type: str) -> Answer:
    headers = {**basic(who), "Content-Type": media_type}
    return call(setup.url, "PUT", f"/v2/{repo}/manifests/{tag}", headers, body)


def test_a_manifest_naming_a_blob_cached_for_an_unreadable_repository_copies_nothing(
    setup: Setup,
) -> None:
    """alice knows the digest of alpha/secret's layer (root pulled it, so the cache holds
    it): her manifest naming it is refused as upstream would refuse it, the layer never
    reaches her repository, and she cannot pull it from there."""
    team, secret = setup.images["alpha/team/app"], setup.images["alpha/secret/app"]
    stolen = secret.layers[0]
    answer = _put(setup, "alice", "alpha/team/app", "stolen",
                  _manifest(team.config, stolen), mt.OCI_MANIFEST)  # fmt: skip
    assert answer.status == 400 and answer.code == "MANIFEST_BLOB_UNKNOWN", answer.body[:300]
    assert setup.fake.get_blob("us", "alpha/team/app", stolen.digest) is None
    pulled = call(setup.url, "GET", f"/v2/alpha/team/app/blobs/{stolen.digest}", basic("alice"))
    assert pulled.status == 404 and stolen.data not in pulled.body


def test_an_index_naming_a_manifest_cached_for_an_unreadable_repository_copies_nothing(
    setup: Setup,
) -> None:
    secret: Image = setup.images["alpha/secret/app"]
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [secret.descriptor()]}  # fmt: skip
    answer = _put(setup, "alice", "alpha/team/other", "stolen",
                  json.dumps(index).encode(), mt.OCI_INDEX)  # fmt: skip
    assert answer.status == 400 and answer.code == "MANIFEST_BLOB_UNKNOWN", answer.body[:300]
    assert setup.fake.get_manifest("us", "alpha/team/other", secret.digest) is None
    for blob in secret.blobs:
        assert setup.fake.get_blob("us", "alpha/team/other", blob.digest) is None
    pulled = call(setup.url, "GET", f"/v2/alpha/team/other/manifests/{secret.digest}",
                  basic("alice"))  # fmt: skip
    assert pulled.status == 404


def test_a_manifest_naming_a_blob_of_a_readable_repository_is_completed_from_the_cache(
    setup: Setup,
) -> None:
    """builder may pull the Docker Hub mirror: a manifest of hers naming its cached layer
    is completed from the cache (as a copy between repositories she can read and write)."""
    team, alpine = setup.images["alpha/team/app"], setup.images["gamma/hub/library/alpine"]
    layer = alpine.layers[0]
    assert setup.fake.get_blob("us", "alpha/team/app", layer.digest) is None
    answer = _put(setup, "builder", "alpha/team/app", "with-alpine",
                  _manifest(team.config, layer), mt.OCI_MANIFEST)  # fmt: skip
    assert answer.status == 201, answer.body[:300]
    assert setup.fake.get_blob("us", "alpha/team/app", layer.digest) == layer.data


# --- upload sessions: whose they are, how many ----------------------------------------


def _start(setup: Setup, who: str, repo: str = "alpha/team/app") -> Answer:
    return call(setup.url, "POST", f"/v2/{repo}/blobs/uploads/", basic(who))


def test_an_upload_session_answers_only_the_identity_that_opened_it(setup: Setup) -> None:
    """builder may push alpha/team too, but alice's session is hers: another identity
    reads, writes, finishes and cancels nothing of it, and learns nothing (the answer
    is that of a session that does not exist)."""
    data = b"alice's blob"
    started = _start(setup, "alice")
    assert started.status == 202, started.body[:300]
    where = started.headers["location"]
    written = call(setup.url, "PATCH", where, basic("alice"), data)
    assert written.status == 202 and written.headers["range"] == f"0-{len(data) - 1}"
    digest = Digest.of(data)
    for method, target, body in (("GET", where, None), ("PATCH", where, b"mallet"),
                                 ("PUT", f"{where}?digest={digest}", b""),
                                 ("DELETE", where, None)):  # fmt: skip
        answer = call(setup.url, method, target, basic("builder"), body)
        assert answer.status == 404, (method, answer.status, answer.body[:300])
        assert answer.code in (None, "BLOB_UPLOAD_UNKNOWN") and "range" not in answer.headers
    assert call(setup.url, "GET", where, basic("alice")).headers["range"] == f"0-{len(data) - 1}"
    finished = call(setup.url, "PUT", f"{where}?digest={digest}", basic("alice"), b"")
    assert finished.status == 201, finished.body[:300]
    assert setup.fake.get_blob("us", "alpha/team/app", str(digest)) == data
    # Finished: the id is spent, for its owner as for anyone.
    for who in ("alice", "builder"):
        again = call(setup.url, "PATCH", where, basic(who), b"more")
        assert again.status == 404 and again.code == "BLOB_UPLOAD_UNKNOWN"


def test_one_identity_cannot_hold_every_upload_session(tmp_path_factory: pytest.TempPathFactory
                                                       ) -> None:  # fmt: skip
    """A client that opens sessions and never finishes them (each holds a row, a spool
    file and an upstream session for 24 h) meets its own bound, not everyone's."""
    directory = tmp_path_factory.mktemp("sessions")
    with seeded_proxy(directory, server__max_upload_sessions="4",
                      server__max_upload_sessions_per_identity="2") as capped:  # fmt: skip
        held = [_start(capped, "alice").headers["location"] for _ in range(2)]
        posts = capped.fake.count("POST")
        layer = capped.layer("alpha/team/other")
        for target in ("/v2/alpha/team/app/blobs/uploads/",
                       f"/v2/alpha/team/app/blobs/uploads/?mount={layer}&from=alpha/team/other",
                       f"/v2/alpha/team/app/blobs/uploads/?digest={layer}"):  # fmt: skip
            refused = call(capped.url, "POST", target, basic("alice"), b"x")
            assert refused.status == 429 and refused.code == "TOOMANYREQUESTS", refused.body[:300]
            assert "alice has 2 upload sessions open" in refused.body.decode()
            assert int(refused.headers["retry-after"]) > 0
        assert capped.fake.count("POST") == posts  # nothing opened upstream for them
        assert _start(capped, "builder").status == 202  # another identity pushes on
        assert call(capped.url, "DELETE", held[0], basic("alice")).status == 204
        assert _start(capped, "alice").status == 202


def test_the_status_page_names_who_pushes_never_a_session_id(setup: Setup) -> None:
    """A session id is the key to a push in progress: the page an admin reads shows
    whose it is, not (a part of) its id; a non-admin sees how many, not which."""
    started = _start(setup, "alice")
    session_id = started.headers["location"].rsplit("/", 1)[1]
    try:
        for who in ("root", "lead"):
            page = call(setup.url, "GET", "/", basic(who)).body.decode()
            table = page.split('id="in-progress"')[1].split("</table>")[0]
            rows = [row for row in table.split("<tr") if "class=upload" in row]
            assert rows and all(session_id[:8] not in row for row in rows), table
            assert any("alice" in row for row in rows), table
        mine = call(setup.url, "GET", "/", basic("alice")).body.decode()
        assert session_id[:8] not in mine and "upload(s)" in mine
    finally:
        call(setup.url, "DELETE", started.headers["location"], basic("alice"))
