"""Bytes one identity's unfinished uploads hold (``server.max_upload_bytes_per_identity``),
against the real upload service, spools on disk and a counting registry.

The count is what the spools hold on disk: it grows as bytes are taken, is refused
before a byte past the cap is taken (that request's bytes rolled back, earlier ones
kept), and comes back when a session finishes, is cancelled or expires, and after a
restart counts what the sessions found on disk hold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.upload_store import UPLOAD_TTL, UploadFiles, UploadTable
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.services.blob_uploads import UploadService
from proxy.services.upload_bytes import UploadLimits
from proxy.services.upload_session import Chunk
from tests.services.test_in_memory import REPO, World

CAP = 100_000
DATA = bytes(range(256)) * 250  # 64,000 bytes


def service(world: World, tmp_path: Path, cap: int = CAP) -> UploadService:
    limits = UploadLimits(bytes_per_owner=cap)
    table, files = UploadTable(world.index.db), UploadFiles(tmp_path)
    return UploadService(world.registry, world.cache, table, files, world.clock, limits=limits)


async def pieces(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def sized(data: bytes, first: int | None = None) -> Chunk:
    span = None if first is None else (first, first + len(data) - 1)
    return Chunk(pieces(data), len(data), span)


def unsized(data: bytes) -> Chunk:
    """A body without Content-Length (chunked transfer, as docker's PATCH)."""
    return Chunk(pieces(data), None)


async def test_a_body_past_the_cap_is_refused_and_earlier_bytes_stay(
    world: World, tmp_path: Path
) -> None:
    uploads = service(world, tmp_path)
    first = await uploads.start(REPO, owner="alice")
    await uploads.append(first, sized(DATA[:60_000], 0))
    assert uploads.held.held("alice") == 60_000
    second = await uploads.start(REPO, owner="alice")
    # Its Content-Length says it will not fit: refused before a byte is read.
    body = sized(DATA[:50_000], 0)
    with pytest.raises(RegistryError) as refused:
        await uploads.append(second, body)
    assert refused.value.code is ErrorCode.TOOMANYREQUESTS and refused.value.status == 429
    assert "alice holds 58.6 KiB" in refused.value.message
    assert "server.max_upload_bytes_per_identity" in refused.value.message
    assert refused.value.headers["Retry-After"]
    assert body.body is not None and await anext(aiter(body.body)) == DATA[:4096]  # unread
    # Without a length: refused at the piece that would pass the cap, rolled back.
    for chunk in (unsized(DATA[:50_000]), Chunk(pieces(DATA[:50_000]), None, (0, 49_999))):
        with pytest.raises(RegistryError) as midway:
            await uploads.append(second, chunk)
        assert midway.value.code is ErrorCode.TOOMANYREQUESTS
        assert second.offset == 0 and second.spool.path.stat().st_size == 0
    assert first.offset == 60_000 and first.spool.path.stat().st_size == 60_000
    assert uploads.held.held("alice") == 60_000
    assert uploads.state_of(second) is not None  # the session goes on
    await uploads.append(second, unsized(DATA[:40_000]))  # what fits is taken
    assert uploads.held.held("alice") == CAP


async def test_another_identity_pushes_while_one_is_at_its_cap(
    world: World, tmp_path: Path
) -> None:
    uploads = service(world, tmp_path)
    held = await uploads.start(REPO, owner="alice")
    await uploads.append(held, sized(DATA[: CAP // 2] * 2, 0))
    assert uploads.held.held("alice") == CAP
    await uploads.monolithic(REPO, Digest.of(DATA), sized(DATA), owner="bob")
    assert world.registry.blobs[f"{REPO.path}@{Digest.of(DATA)}"] == DATA
    assert uploads.held.held("bob") == 0  # finished: its bytes are the cache's now


async def test_a_blob_larger_than_the_whole_cap_is_413(world: World, tmp_path: Path) -> None:
    uploads = service(world, tmp_path, cap=50_000)
    for chunk in (sized(DATA), unsized(DATA)):
        with pytest.raises(RegistryError) as refused:
            await uploads.monolithic(REPO, Digest.of(DATA), chunk, owner="alice")
        assert (refused.value.code, refused.value.status) == (ErrorCode.TOO_LARGE, 413)
        assert "no blob larger than that" in refused.value.message
    assert uploads.held.held("alice") == 0 and uploads.open_sessions() == 0
    assert world.registry.writes == 0 or f"{REPO.path}@{Digest.of(DATA)}" not in (
        world.registry.blobs
    )


async def test_the_count_returns_after_cancel_finish_and_expiry(
    world: World, tmp_path: Path
) -> None:
    uploads = service(world, tmp_path)
    cancelled = await uploads.start(REPO, owner="alice")
    await uploads.append(cancelled, sized(DATA[:30_000], 0))
    finished = await uploads.start(REPO, owner="alice")
    await uploads.append(finished, unsized(DATA))
    left = await uploads.start(REPO, owner="alice")
    await uploads.append(left, sized(DATA[:5_000], 0))
    assert uploads.held.held("alice") == 30_000 + len(DATA) + 5_000
    await uploads.cancel(cancelled)
    assert uploads.held.held("alice") == len(DATA) + 5_000
    await uploads.finish(finished, Digest.of(DATA), Chunk(None))
    assert world.cache.size(Digest.of(DATA)) == len(DATA)  # cached, no longer spooled
    assert uploads.held.held("alice") == 5_000
    world.clock.advance(UPLOAD_TTL + 1)
    await uploads.make_room("alice")  # forgets the session nobody touched for a day
    assert uploads.held.held("alice") == 0


async def test_sessions_found_after_a_restart_count_again(world: World, tmp_path: Path) -> None:
    first = service(world, tmp_path)
    kept = await first.start(REPO, owner="alice")
    await first.append(kept, sized(DATA, 0))
    other = await first.start(REPO, owner="alice")
    await first.append(other, sized(DATA[:20_000], 0))
    for session in (kept, other):
        session.spool.pause()
    restarted = service(world, tmp_path)  # a new process: nothing in memory
    await restarted.rest_found()
    assert restarted.held.held("alice") == len(DATA) + 20_000
    fresh = await restarted.start(REPO, owner="alice")
    with pytest.raises(RegistryError) as refused:
        await restarted.append(fresh, sized(DATA[:30_000], 0))
    assert refused.value.code is ErrorCode.TOOMANYREQUESTS
    resumed = await restarted.session(REPO, kept.id, owner="alice")  # counted once, not twice
    assert resumed.offset == len(DATA)
    assert restarted.held.held("alice") == len(DATA) + 20_000
    await restarted.cancel(resumed)
    assert restarted.held.held("alice") == 20_000
    await restarted.append(fresh, sized(DATA[:30_000], 0))  # room again
    # The untouched one expires with its bytes (row and file), though nobody resumed it.
    world.clock.advance(UPLOAD_TTL + 1)
    await restarted.make_room("bob")
    assert restarted.held.held("alice") == 0
    assert not (tmp_path / "uploads" / other.id).exists()
    assert await UploadTable(world.index.db).get(other.id) is None


async def test_no_cap_counts_but_refuses_nothing(world: World, tmp_path: Path) -> None:
    uploads = service(world, tmp_path, cap=0)
    session = await uploads.start(REPO, owner="alice")
    for first in range(0, 4 * len(DATA), len(DATA)):
        await uploads.append(session, sized(DATA, first))
    assert session.offset == 4 * len(DATA) > CAP
