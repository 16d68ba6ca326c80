"""Location resolution without a remembered location: the default, and the index is
not asked again on every request (it was, an index query per manifest HEAD)."""

from __future__ import annotations

from pathlib import Path

from proxy.cache.index import CacheIndex
from proxy.clock import ManualClock
from proxy.config import load_settings
from proxy.oci.names import Repository
from proxy.services.locations import DEFAULT_RECHECK, DEFAULTED_LIMIT, LocationResolver


async def test_the_default_location_is_kept_a_while_then_the_index_asked_again(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        env={"HOME": str(tmp_path)},
        overrides={"upstream.url": "http://127.0.0.1:1/{location}", "routing.location": "us"},
    )
    clock = ManualClock()
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    asked: list[str] = []
    original = index.documents.get

    async def counted(key: str) -> tuple[str, bytes, str, float] | None:
        asked.append(key)
        return await original(key)

    index.documents.get = counted  # type: ignore[method-assign]
    try:
        resolver = LocationResolver(settings.routing, None, index, gar=True, clock=clock)
        repo = Repository.parse("proj/repo/app")
        for _ in range(3):
            assert (await resolver.resolve(repo)).location == "us"
        assert asked == ["location:proj/repo"]
        # Another process (a `warm` run) found the real one meanwhile.
        await index.documents.put("location:proj/repo", "text/plain", b"europe-west1", "{}")
        clock.advance(DEFAULT_RECHECK + 1)
        assert (await resolver.resolve(repo)).location == "europe-west1"
        assert len(asked) == 2
    finally:
        await index.close()


async def test_the_memo_of_defaulted_names_is_bounded(tmp_path: Path) -> None:
    """Clients choose repository names: remembering each defaulted one must not grow
    memory without end."""
    settings = load_settings(
        env={"HOME": str(tmp_path)},
        overrides={"upstream.url": "http://127.0.0.1:1/{location}", "routing.location": "us"},
    )
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    try:
        resolver = LocationResolver(settings.routing, None, index, gar=True, clock=ManualClock())
        for n in range(DEFAULTED_LIMIT + 10):
            repo = Repository.parse(f"proj/repo{n}/app")
            assert (await resolver.resolve(repo)).location == "us"
        assert 0 < len(resolver._defaulted) <= DEFAULTED_LIMIT
    finally:
        await index.close()
