"""The Cloud Storage client of the shared tier (proxy/upstream/storage.py) against a
recording server: which credentials it sends, a stale token refreshed once, writes
streamed with their length, and the token never in an error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci.errors import RegistryError
from proxy.upstream.storage import StorageBucket
from testkit.servers import serve_in_thread


class Tokens:
    """A token source: ``token-1`` until refreshed, then ``token-2``; wide or narrow."""

    def __init__(self) -> None:
        self.current = "token-1"
        self.asked: list[tuple[str, bool]] = []

    async def token(self, *, wide: bool = False) -> str:
        self.asked.append(("token", wide))
        return self.current

    async def refresh(self, stale: str, *, wide: bool = False) -> str:
        self.asked.append(("refresh", wide))
        self.current = "token-2"
        return self.current


class Recorder:
    """Answers 401 to ``token-1``; otherwise an object GET with its body, 200 to writes."""

    def __init__(self, status: int = 200) -> None:
        self.seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.status = status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        headers[":path"] = scope["raw_path"].decode()
        self.seen.append(headers)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        status = 401 if headers.get("authorization") == "Bearer token-1" else self.status
        answer = b"object bytes" if status == 200 else b'{"error": {"message": "no"}}'
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})


async def test_reads_and_writes_carry_gars_token_refreshed_once_when_stale(tmp_path: Path) -> None:
    recorder, tokens = Recorder(), Tokens()
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_000)
    with serve_in_thread(recorder) as url:
        async with httpx.AsyncClient() as http:
            bucket = StorageBucket(http, tokens, url, "team-cache")
            stream = await bucket.open("p/sha256/ab")
            assert stream is not None and await stream.read(1 << 20) == b"object bytes"
            tokens.current = "token-1"  # gone stale again: the write is refused once too
            await bucket.upload("p/sha256/ab", path)
    first_get, get, first_post, post = recorder.seen
    assert first_get["authorization"] == "Bearer token-1"
    assert get["authorization"] == "Bearer token-2"
    assert get[":path"] == "/storage/v1/b/team-cache/o/p%2Fsha256%2Fab"
    assert post["authorization"] == "Bearer token-2" and first_post[":path"] == post[":path"]
    assert post[":path"] == "/upload/storage/v1/b/team-cache/o"
    # Streamed from the file with its length (not chunked), sent whole again after a 401.
    assert post["content-length"] == "3000000" and "transfer-encoding" not in post
    assert recorder.bodies[-1] == path.read_bytes()
    assert tokens.asked == [("token", False), ("refresh", False), ("token", True),
                            ("refresh", True)]  # fmt: skip


async def test_without_a_token_source_requests_go_without_credentials(tmp_path: Path) -> None:
    recorder = Recorder(status=404)
    with serve_in_thread(recorder) as url:
        async with httpx.AsyncClient() as http:
            assert await StorageBucket(http, None, url, "b").open("p/sha256/ab") is None
    assert "authorization" not in recorder.seen[0]


async def test_a_failed_write_names_the_status_never_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder, tokens = Recorder(status=403), Tokens()
    tokens.current = "token-9"
    path = tmp_path / "blob"
    path.write_bytes(b"data")
    with serve_in_thread(recorder) as url, caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient() as http:
            with pytest.raises(RegistryError) as raised:
                await StorageBucket(http, tokens, url, "b").upload("n", path)
    assert raised.value.code.status == 403
    assert "token-9" not in str(raised.value.message) + caplog.text
