"""The upload service's spool when the disk fills, and its session state machine, against
the in-memory registry (GAR's way: one write per session, counted in ``writes``).

A full disk is a spool whose writes fail past a budget (``FullFiles``), the way
``BlobCache.free_bytes`` is a probe tests set: what matters is what the service does with
the ``OSError``, not how the disk filled.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.upload_store import Allowance, Spool, UploadFiles, UploadTable
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.services.blob_uploads import UploadService
from proxy.services.upload_bytes import UploadLimits
from proxy.services.upload_session import Chunk, Session
from tests.services.test_in_memory import OWNER, REPO, World

DATA = bytes(range(256)) * 400  # 102,400 bytes
DIGEST = Digest.of(DATA)
MIB = 1 << 20


class FullSpool(Spool):
    """A spool on a disk with ``room`` bytes free."""

    room = 0

    def write(self, piece: bytes) -> None:
        if not self.lost and self.size + len(piece) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(piece)


class FullFiles(UploadFiles):
    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    def spool(self, upload_id: str, allowance: Allowance | None = None) -> Spool:
        spool = FullSpool(self.root / upload_id, allowance=allowance)
        spool.room = self.room
        return spool


async def pieces(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def uploads(world: World, tmp_path: Path, room: int | None = None) -> UploadService:
    files = UploadFiles(tmp_path) if room is None else FullFiles(tmp_path, room)
    return UploadService(world.registry, world.cache, UploadTable(world.index.db), files)


def chunk(data: bytes, first: int | None = None) -> Chunk:
    span = None if first is None else (first, first + len(data) - 1)
    return Chunk(pieces(data), len(data), span)


async def test_a_chunk_that_does_not_fit_on_disk_is_refused_and_leaves_no_trace(
    world: World, tmp_path: Path
) -> None:
    service = uploads(world, tmp_path, room=60_000)
    session = await service.start(REPO, owner=OWNER)
    await service.append(session, chunk(DATA[:50_000], 0))
    with pytest.raises(RegistryError) as refused:
        await service.append(session, chunk(DATA[50_000:], 50_000))
    assert (refused.value.code, refused.value.status) == (ErrorCode.CACHE_FULL, 503)
    assert service.state_of(session) is not None  # the session goes on: retry later
    assert session.offset == 50_000 and session.spool.path.stat().st_size == 50_000
    assert world.registry.writes == 0


async def test_a_streamed_write_goes_on_upstream_when_the_disk_fills(
    world: World, tmp_path: Path
) -> None:
    """docker's PATCH: upstream takes the whole blob; the spool gives up (not cached),
    and the empty PUT commits what upstream holds."""
    service = uploads(world, tmp_path, room=30_000)
    session = await service.start(REPO, owner=OWNER)
    state = await service.append(session, Chunk(pieces(DATA), None))
    assert state.offset == len(DATA) and session.spool.lost
    await service.finish(session, DIGEST, Chunk(None))
    assert world.registry.blobs[f"{REPO.path}@{DIGEST}"] == DATA
    assert world.registry.writes == 1
    assert world.cache.size(DIGEST) is None  # the proxy could not vouch for the bytes


async def test_more_after_a_spool_was_lost_cannot_land_and_says_so(
    world: World, tmp_path: Path
) -> None:
    service = uploads(world, tmp_path, room=30_000)
    session = await service.start(REPO, owner=OWNER)
    await service.append(session, Chunk(pieces(DATA[:50_000]), None))
    with pytest.raises(RegistryError) as refused:
        await service.append(session, chunk(DATA[50_000:], 50_000))
    assert refused.value.code is ErrorCode.CACHE_FULL and "push it again" in refused.value.message
    assert service.state_of(session) is None  # dropped: nothing could complete it
    assert not session.spool.path.exists()


async def test_a_wrong_digest_is_refused_before_any_upstream_write(
    world: World, tmp_path: Path
) -> None:
    service = uploads(world, tmp_path)
    session = await service.start(REPO, owner=OWNER)
    await service.append(session, chunk(DATA, 0))
    with pytest.raises(RegistryError) as refused:
        await service.finish(session, Digest.of(b"something else"), Chunk(None))
    assert refused.value.code is ErrorCode.DIGEST_INVALID
    assert world.registry.calls["commit_upload"] == 0 and world.registry.writes == 0
    assert service.state_of(session) is None and not session.spool.path.exists()
    assert world.registry.calls["cancel_upload"] == 1  # its upstream session given up


async def test_a_wrong_last_chunk_never_completes_an_upstream_write(
    world: World, tmp_path: Path
) -> None:
    """The final write streams; its last byte waits for the digest check, so upstream
    gets a body cut short (no blob), not a wrong blob."""
    service = uploads(world, tmp_path)
    session = await service.start(REPO, owner=OWNER)
    await service.append(session, chunk(DATA[:50_000], 0))
    wrong = bytes(len(DATA) - 50_000)
    with pytest.raises(RegistryError) as refused:
        await service.finish(session, DIGEST, Chunk(pieces(wrong), len(wrong)))
    assert refused.value.code is ErrorCode.DIGEST_INVALID
    assert not any(key.endswith(str(DIGEST)) for key in world.registry.blobs)


async def test_a_restarted_service_finds_the_session_and_its_bytes(
    world: World, tmp_path: Path
) -> None:
    first = uploads(world, tmp_path)
    session = await first.start(REPO, owner=OWNER)
    await first.append(session, chunk(DATA[:40_000], 0))
    session.spool.pause()
    again = uploads(world, tmp_path)  # a new process: nothing in memory
    restored: Session = await again.session(REPO, session.id, owner=OWNER)
    assert restored.offset == 40_000 and restored.upstream_open
    await again.append(restored, chunk(DATA[40_000:], 40_000))
    await again.finish(restored, DIGEST, Chunk(None))
    assert world.registry.blobs[f"{REPO.path}@{DIGEST}"] == DATA
    assert world.registry.writes == 1 and world.cache.size(DIGEST) == len(DATA)


async def test_a_session_of_another_repository_or_a_made_up_id_is_unknown(
    world: World, tmp_path: Path
) -> None:
    service = uploads(world, tmp_path)
    session = await service.start(REPO, owner=OWNER)
    other = type(REPO)("p/r/other", "us")
    for repo, upload_id in ((other, session.id), (REPO, "0" * 32), (REPO, "../../etc")):
        with pytest.raises(RegistryError) as unknown:
            await service.session(repo, upload_id, owner=OWNER)
        assert unknown.value.code is ErrorCode.BLOB_UPLOAD_UNKNOWN


async def test_a_session_is_its_openers_alone_also_after_a_restart(
    world: World, tmp_path: Path
) -> None:
    """Another identity finds no such session, in memory or restored from its row; a row
    from before sessions had owners (owner NULL) is nobody's: its client starts again."""
    first = uploads(world, tmp_path)
    session = await first.start(REPO, owner="alice")
    legacy = await first.start(REPO, owner="alice")
    await first.append(session, chunk(DATA[:1000], 0))
    session.spool.pause()
    for service in (first, uploads(world, tmp_path)):  # live, then restored
        with pytest.raises(RegistryError) as unknown:
            await service.session(REPO, session.id, owner="bob")
        assert unknown.value.code is ErrorCode.BLOB_UPLOAD_UNKNOWN
    legacy.row.owner = None
    await UploadTable(world.index.db).put(legacy.row)
    again = uploads(world, tmp_path)
    for owner in ("alice", "anonymous"):
        with pytest.raises(RegistryError):
            await again.session(REPO, legacy.id, owner=owner)
    assert (await again.session(REPO, session.id, owner="alice")).offset == 1000


async def test_open_sessions_are_bounded_in_all_and_per_identity(
    world: World, tmp_path: Path
) -> None:
    table, files = UploadTable(world.index.db), UploadFiles(tmp_path)
    limits = UploadLimits(total=3, per_owner=2)
    service = UploadService(world.registry, world.cache, table, files, limits=limits)
    alice = [await service.start(REPO, owner="alice") for _ in range(2)]
    calls = world.registry.calls["start_upload"]
    with pytest.raises(RegistryError) as refused:
        await service.start(REPO, owner="alice")
    assert refused.value.code is ErrorCode.TOOMANYREQUESTS
    assert "alice has 2 upload sessions open" in refused.value.message
    assert refused.value.headers["Retry-After"]
    bob = await service.start(REPO, owner="bob")  # the total is not reached yet
    with pytest.raises(RegistryError) as full:
        await service.start(REPO, owner="carol")
    assert (
        full.value.code is ErrorCode.TOOMANYREQUESTS and "3 upload sessions" in full.value.message
    )
    assert world.registry.calls["start_upload"] == calls + 1  # refusals asked nothing upstream
    await service.cancel(alice[0])
    await service.finish(bob, Digest.of(b""), Chunk(None))
    assert (await service.start(REPO, owner="carol")).row.owner == "carol"
    assert (await service.start(REPO, owner="alice")).row.owner == "alice"


async def test_spools_stop_at_the_cache_floor_as_at_a_full_disk(
    world: World, tmp_path: Path
) -> None:
    """A client pushing chunks it never finishes could spool the disk empty (SQLite, and
    every pull, then fail): below ``cache.min_free`` a spool is as full as on ENOSPC.
    A chunk only the proxy keeps is refused, rolled back; a streamed write goes on."""
    spooled = tmp_path / "uploads"
    world.cache.min_free = 100 * MIB
    world.cache.free_bytes = lambda: (  # 30 kB above the floor, less what spools hold
        100 * MIB + 30_000 - sum(path.stat().st_size for path in spooled.iterdir())
    )
    service = UploadService(world.registry, world.cache, UploadTable(world.index.db),
                            UploadFiles(tmp_path, floor=world.cache))  # fmt: skip
    session = await service.start(REPO, owner=OWNER)
    await service.append(session, chunk(DATA[:20_000], 0))
    with pytest.raises(RegistryError) as refused:
        await service.append(session, chunk(DATA[20_000:], 20_000))
    assert refused.value.code is ErrorCode.CACHE_FULL and "cache.min_free" in refused.value.message
    assert session.offset == 20_000 and session.spool.path.stat().st_size == 20_000
    streamed = await service.start(REPO, owner=OWNER)
    assert (await service.append(streamed, Chunk(pieces(DATA), None))).offset == len(DATA)
    assert streamed.spool.lost
    await service.finish(streamed, DIGEST, Chunk(None))
    assert world.registry.blobs[f"{REPO.path}@{DIGEST}"] == DATA
