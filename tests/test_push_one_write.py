"""Every way a client uploads a blob lands at the GAR-shaped fake as ONE write.

GAR takes one write per upload session (docs/GAR.md). The fake counts the writes
(``fake.writes()``: requests that carried bytes into a session, refused ones too;
``fake.writes(digest)``: those into the session that stored the blob). Each pattern a
client uses (monolithic, POST + PUT, docker's streamed PATCH + empty PUT, chunks with
``Content-Range``), a client that is cut off and resumes, an upstream that fails
mid-write or forgets a session: the blob ends in one good write.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci.digest import Digest
from proxy.services.blob_copy import ATTEMPTS
from testkit.fakes.gar import FakeGAR, Fault
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
UPLOADS = f"/v2/{REPO}/blobs/uploads/"
SIZE = 300_000


def blob(size: int = SIZE, seed: int = 0) -> tuple[bytes, str]:
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    data = data[:size]
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")
    return fake


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(fake.upstream)


@pytest.fixture
def client(running: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        yield http


def cached(running: RunningProxy, digest: str) -> int | None:
    return running.services.cache.size(Digest.parse(digest))


def pieces(data: bytes, size: int = 50_000) -> Iterator[bytes]:
    """A body without Content-Length: chunked transfer, as docker sends it."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def ranged(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    headers = {"Content-Range": f"{start}-{start + len(data) - 1}"}
    return client.patch(location, content=data, headers=headers)


# --------------------------------------------------------------------------- the patterns


def _monolithic(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    return client.post(UPLOADS, params={"digest": digest}, content=data)


def _post_put(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    return client.put(location, params={"digest": digest}, content=data)


def _docker(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    sent = client.patch(location, content=pieces(data))
    assert (sent.status_code, sent.headers["range"]) == (202, f"0-{len(data) - 1}")
    return client.put(sent.headers["location"], params={"digest": digest})


def _one_patch_with_length(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    sent = client.patch(location, content=data)
    return client.put(sent.headers["location"], params={"digest": digest})


def _three_chunks(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    third = len(data) // 3
    for start, end in ((0, third), (third, 2 * third), (2 * third, len(data))):
        answer = ranged(client, location, data[start:end], start)
        assert answer.status_code == 202, answer.text
        location = answer.headers["location"]
    return client.put(location, params={"digest": digest})


def _chunks_then_last_in_put(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    half = len(data) // 2
    location = ranged(client, location, data[:half], 0).headers["location"]
    return client.put(location, params={"digest": digest}, content=data[half:])


PATTERNS: dict[str, Callable[[httpx.Client, bytes, str], httpx.Response]] = {
    "monolithic POST ?digest=": _monolithic,
    "POST + PUT with the body": _post_put,
    "docker: streamed PATCH + empty PUT": _docker,
    "one PATCH with Content-Length + empty PUT": _one_patch_with_length,
    "three PATCHes with Content-Range + empty PUT": _three_chunks,
    "a chunk, then the rest in the PUT": _chunks_then_last_in_put,
}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_client_pattern_lands_in_one_write(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, pattern: str
) -> None:
    data, digest = blob(seed=len(pattern))
    done = PATTERNS[pattern](client, data, digest)
    assert done.status_code == 201, done.text
    assert done.headers["docker-content-digest"] == digest
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == fake.writes(digest) == 1
    assert fake.count("POST", "upload") == 1  # one upstream session, never a second
    assert cached(running, digest) == len(data)
    assert list((running.settings.cache.dir / "uploads").iterdir()) == []


@pytest.mark.parametrize("pattern", ["docker", "post-put", "monolithic"])
def test_the_first_byte_reaches_gar_before_the_clients_last(
    fake: FakeGAR, client: httpx.Client, pattern: str
) -> None:
    """The client holds back its second half until the fake has seen the first bytes:
    a proxy that waited for the whole body would never get them (the wait times out)."""
    data, digest = blob(seed=40)
    fake.write_started.clear()
    seen: list[bool] = []

    def body() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        seen.append(fake.write_started.wait(timeout=15))
        yield data[len(data) // 2 :]

    if pattern == "monolithic":
        done = client.post(UPLOADS, params={"digest": digest}, content=body())
    else:
        location = client.post(UPLOADS).headers["location"]
        if pattern == "docker":
            location = client.patch(location, content=body()).headers["location"]
            done = client.put(location, params={"digest": digest})
        else:
            done = client.put(location, params={"digest": digest}, content=body())
    assert done.status_code == 201, done.text
    assert seen == [True]
    assert fake.writes() == 1


# --------------------------------------------------------------------------- clients cut off


def spool_size(running: RunningProxy, location: str) -> int:
    path = running.settings.cache.dir / "uploads" / location.rsplit("/", 1)[1]
    return path.stat().st_size if path.exists() else 0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition the proxy reaches on its own (no event to await across processes)."""
    done = threading.Event()
    for _ in range(1500):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def cut_request(url: str, head: str, body: bytes, condition: Callable[[], bool]) -> None:
    """Send ``head`` and ``body`` (less than the head announces) on a raw socket, wait
    for ``condition``, then close it: a client gone mid-body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        wait_for(condition, "the proxy to take the bytes sent")


def test_a_client_cut_off_mid_chunk_resumes_from_what_the_proxy_holds(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(seed=41)
    location = client.post(UPLOADS).headers["location"]
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-{len(data) - 1}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    cut_request(running.url, head, data[:100_000], lambda: spool_size(running, location) > 0)
    status = client.get(location)  # waits for the cut request to end: the offset is settled
    held = int(status.headers["range"].split("-")[1]) + 1
    assert status.status_code == 204 and 0 < held <= 100_000
    resumed = ranged(client, location, data[held:], held)
    assert resumed.status_code == 202, resumed.text
    done = client.put(resumed.headers["location"], params={"digest": digest})
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == fake.writes(digest) == 1


def test_a_streamed_patch_cut_off_mid_body_resumes_into_a_fresh_session(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    """docker's streamed PATCH goes upstream as it comes; cut, that write is dropped
    (upstream never sees its end) and the blob lands later in a fresh session."""
    data, digest = blob(seed=42)
    location = client.post(UPLOADS).headers["location"]
    first = data[:120_000]
    head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = f"{len(first):x}\r\n".encode() + first + b"\r\n"
    fake.write_started.clear()
    cut_request(
        running.url, head, chunk,
        lambda: fake.write_started.is_set() and spool_size(running, location) == len(first),
    )  # fmt: skip
    status = client.get(location)
    assert status.headers["range"] == f"0-{len(first) - 1}"
    resumed = ranged(client, location, data[len(first) :], len(first))
    assert resumed.status_code == 202, resumed.text
    assert client.put(location, params={"digest": digest}).status_code == 201
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes(digest) == 1
    assert [w.accepted for w in fake.upload_writes] == [False, True]  # the cut one stored nothing


# --------------------------------------------------------------------------- upstream faults


def test_an_upstream_cut_mid_streamed_patch_is_not_the_clients_problem(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(seed=43)
    fake.cut_next_write(after=64 * 1024)
    done = _docker(client, data, digest)  # the PATCH answered 202 all the same
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert [w.accepted for w in fake.upload_writes] == [False, True]
    assert fake.writes(digest) == 1 and fake.count("POST", "upload") == 2
    assert cached(running, digest) == len(data)


def test_an_upstream_cut_mid_final_write_is_written_again_by_the_proxy(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(seed=44)
    fake.cut_next_write(after=64 * 1024)
    done = _post_put(client, data, digest)
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert [w.accepted for w in fake.upload_writes] == [False, True]
    assert fake.writes(digest) == 1


def test_when_every_write_is_cut_the_client_resumes_with_a_put(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(seed=45)
    fake.cut_next_write(after=64 * 1024, times=ATTEMPTS)
    location = client.post(UPLOADS).headers["location"]
    location = ranged(client, location, data, 0).headers["location"]
    failed = client.put(location, params={"digest": digest})
    assert failed.status_code == 502, failed.text
    assert failed.headers["range"] == f"0-{len(data) - 1}"  # the session goes on
    assert fake.get_blob("us", REPO, digest) is None
    status = client.get(location)
    assert status.headers["range"] == f"0-{len(data) - 1}"
    done = client.put(location, params={"digest": digest})
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == ATTEMPTS + 1 and fake.writes(digest) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 410, 416, 500, 503])
def test_any_refusal_of_a_write_goes_to_a_fresh_session(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, status: int
) -> None:
    """What GAR answers to a write it will not take (a second one, an expired session)
    is unknown: whatever it is, the blob goes to a fresh session once."""
    data, digest = blob(seed=status)
    fake.add_fault(Fault(method="PUT", kind="upload", status=status, times=1))
    done = _three_chunks(client, data, digest)
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes(digest) == 1 and fake.count("POST", "upload") == 2


@pytest.mark.parametrize("pattern", ["three chunks", "docker"])
def test_an_expired_upstream_session_is_replaced_from_the_spool(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, pattern: str
) -> None:
    data, digest = blob(seed=46)
    location = client.post(UPLOADS).headers["location"]
    if pattern == "docker":
        location = client.patch(location, content=pieces(data)).headers["location"]
    else:
        location = ranged(client, location, data, 0).headers["location"]
    assert fake.expire_upload_sessions() == 1  # it took long: GAR forgot the session
    done = client.put(location, params={"digest": digest})
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes(digest) == 1


def test_sessions_under_gars_own_package_path_work_the_same(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    fake.upload_session_form = "pkg"  # /v2/P/R/pkg/blobs/uploads/<id>: not the image's path
    for seed, pattern in enumerate((_docker, _three_chunks, _post_put)):
        data, digest = blob(seed=50 + seed)
        assert pattern(client, data, digest).status_code == 201
        assert fake.get_blob("us", REPO, digest) == data and fake.writes(digest) == 1


def test_two_patches_at_once_on_one_session_are_taken_in_turn(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(seed=47)
    location = client.post(UPLOADS).headers["location"]
    half = len(data) // 2
    host, port = running.url.removeprefix("http://").split(":")
    other: list[httpx.Response] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-{half - 1}\r\n"
        sock.sendall(f"{head}Content-Length: {half}\r\n\r\n".encode() + data[:1000])
        wait_for(lambda: spool_size(running, location) == 1000, "the first PATCH to start")

        def race() -> None:
            with httpx.Client(base_url=running.url, timeout=30) as second:
                other.append(ranged(second, location, data[:half], 0))

        racer = threading.Thread(target=race)
        racer.start()
        sock.sendall(data[1000:half])
        answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 202"), answer
    racer.join(30)
    # The second waited for the first, then found the upload past its start: 416.
    assert other[0].status_code == 416 and other[0].headers["range"] == f"0-{half - 1}"
    rest = ranged(client, location, data[half:], half)
    assert rest.status_code == 202
    assert client.put(location, params={"digest": digest}).status_code == 201
    assert fake.get_blob("us", REPO, digest) == data and fake.writes() == 1


def test_an_upload_session_on_another_host_is_refused_and_never_named(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, tmp_path: Path
) -> None:
    fake.upload_session_host = "http://127.0.0.1:9"  # an absolute Location elsewhere
    answer = client.post(UPLOADS)
    assert answer.status_code == 502
    message = answer.json()["errors"][0]["message"]
    assert "another host (http://127.0.0.1:9)" in message
    assert "artifacts-uploads" not in message and "uploads/" not in message
    assert not any(o in answer.text for o in fake.upload_opaques())
