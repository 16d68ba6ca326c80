"""Manifest GET/HEAD: digests are immutable, tags are pointers with a TTL.

By digest: answered from the cache forever once fetched and verified.
By tag: within ``tag_ttl`` answered locally; after it, one upstream ``HEAD`` (not a
GET) revalidates; a changed digest is fetched once; an upstream 404 drops the tag;
an upstream outage or rate limit serves the stale tag (up to ``max_stale``), counted,
and for ``stale_recheck`` after such a failure without asking upstream again.
Concurrent misses and revalidations of one key share one upstream call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import httpx

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex, ManifestRow, TagRow
from proxy.cache.singleflight import SingleFlight
from proxy.config import Settings
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT, parse_manifest
from proxy.oci.names import Repository
from proxy.services.answers import Answer
from proxy.upstream import errors
from proxy.upstream.client import Upstream, read_error_body, read_limited

log = logging.getLogger("gar_proxy.manifests")


def _children(body: bytes, media_type: str) -> list[Digest]:
    try:
        manifest = parse_manifest(body, media_type)
    except RegistryError:
        return []  # an artifact type we do not know: cache it, reference nothing
    return [d.digest for d in (*manifest.blobs, *manifest.manifests)]


_DIGEST_FIELD = re.compile(rb'"digest"\s*:\s*"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})"')
_OVERLAP = 512  # bytes kept between reads: longer than any digest field


def _children_in_file(path: Path) -> list[Digest]:
    """The digests a manifest too big to parse whole refers to, so pins protect them.

    A streaming scan for ``"digest": "..."`` fields (config, layers, child manifests,
    and a subject, which only keeps one more blob) in 1 MiB reads, never the whole
    file in memory; the overlap catches a field cut by a read boundary.
    """
    found: dict[bytes, None] = {}
    tail = b""
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            window = tail + chunk
            found.update((m.group(1), None) for m in _DIGEST_FIELD.finditer(window))
            tail = window[-_OVERLAP:]
    return [Digest.parse(text.decode()) for text in found]


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", mt.OCI_MANIFEST)).split(";")[0].strip()


class ManifestService:
    def __init__(
        self,
        settings: Settings,
        index: CacheIndex,
        cache: BlobCache,
        upstream: Upstream,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.index = index
        self.cache = cache
        self.upstream = upstream
        self.metrics = metrics
        self._flights: SingleFlight[ManifestRow] = SingleFlight()
        self._checks: SingleFlight[Digest | None] = SingleFlight()
        # (repo, tag) -> monotonic time before which a stale tag is served unasked.
        self._recheck_at: dict[tuple[str, str], float] = {}

    def _unknown(self, repo: Repository, reference: str | Digest) -> RegistryError:
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {repo}:{reference} is not known",
            detail={"name": repo.path, "reference": str(reference)},
        )

    async def get(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...], *, head: bool
    ) -> Answer:
        for _ in range(2):
            if isinstance(reference, Digest):
                row = await self._by_digest(repo, reference)
            else:
                row = await self._by_tag(repo, reference, accept)
            try:
                return self._answer(row, head)
            except FileNotFoundError:
                continue  # a large manifest's file went since the lookup: look again
        raise RegistryError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"manifest {reference} was evicted as soon as it was fetched (cache.max_size)",
            status=503,
        )

    def _answer(self, row: ManifestRow, head: bool) -> Answer:
        body = None if head else (row.body if row.body is not None else self.cache.read(row.digest))
        return Answer(row.digest, row.media_type, row.size, body=body)

    async def _cached(self, digest: Digest) -> ManifestRow | None:
        """The cached manifest; a miss if it was kept as a blob file (over 4 MiB) that
        eviction or ``verify`` has removed since."""
        row = await self.index.get_manifest(digest)
        if row is not None and row.body is None and self.cache.size(digest) is None:
            return None
        return row

    async def _by_digest(self, repo: Repository, digest: Digest) -> ManifestRow:
        row = await self._cached(digest)
        if row is not None:
            self.metrics.manifest("hit")
            return row
        if self.settings.offline:
            raise self._unknown(repo, digest)
        self.metrics.manifest("miss")
        fetch = lambda: self._fetch(repo, str(digest), mt.DEFAULT_ACCEPT, digest)  # noqa: E731
        return await self._flights.do((repo.path, str(digest)), fetch)

    async def _by_tag(self, repo: Repository, tag: str, accept: tuple[str, ...]) -> ManifestRow:
        key = str(repo)
        if (
            accept
            and all(t in mt.SCHEMA1_TYPES for t in accept if t in mt.MANIFEST_TYPES)
            and any(t in mt.SCHEMA1_TYPES for t in accept)
        ):
            return await self._passthrough(repo, tag, accept)
        tag_row = await self.index.get_tag(key, tag)
        if tag_row is not None:
            served = await self._from_tag(repo, key, tag, tag_row, accept)
            if served is not None:
                return served
        if self.settings.offline:
            raise self._unknown(repo, tag)
        self.metrics.manifest("miss")
        row = await self._flights.do((key, tag), lambda: self._fetch_tag(repo, key, tag))
        if not mt.accepts(accept, row.media_type):
            return await self._passthrough(repo, tag, accept)
        return row

    async def _from_tag(
        self, repo: Repository, key: str, tag: str, tag_row: TagRow, accept: tuple[str, ...]
    ) -> ManifestRow | None:
        """The cached manifest for a tag if it is fresh, revalidated, or servable stale."""
        cached = await self._cached(tag_row.digest)
        if cached is None or not mt.accepts(accept, tag_row.media_type):
            return None
        age = time.time() - tag_row.verified
        if age < self.settings.tag_ttl_seconds or self.settings.offline:
            self.metrics.manifest("hit")
            return cached
        servable_stale = age < self.settings.max_stale_seconds
        if servable_stale and self._recheck_at.get((key, tag), 0.0) > time.monotonic():
            self.metrics.stale_served.inc()  # upstream failed moments ago: don't wait on it
            return cached
        try:
            current = await self._checks.do((key, tag), lambda: self._head_digest(repo, tag))
        except RegistryError as error:
            if errors.is_transient(error) and servable_stale:
                wait = self.settings.stale_recheck_seconds
                self._recheck_at[(key, tag)] = time.monotonic() + wait
                log.warning(
                    "serving stale tag %s:%s (%.0fs old) for %gs: %s",
                    key, tag, age, wait, error.message,
                )  # fmt: skip
                self.metrics.stale_served.inc()
                return cached
            if error.code is ErrorCode.MANIFEST_UNKNOWN:
                await self.index.delete_tag(key, tag)
            raise
        self._recheck_at.pop((key, tag), None)
        if current == tag_row.digest:
            await self.index.mark_verified(key, tag)
            self.metrics.manifest("revalidated")
            return cached
        return None

    async def _head_digest(self, repo: Repository, tag: str) -> Digest | None:
        response = await self.upstream.send(
            "HEAD", repo, f"/manifests/{tag}", headers={"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
        )
        if response.status_code != 200:
            raise errors.from_response(response, b"", not_found=ErrorCode.MANIFEST_UNKNOWN)
        header = response.headers.get("docker-content-digest")
        try:
            return Digest.parse(header) if header else None
        except RegistryError:
            return None

    async def _fetch_tag(self, repo: Repository, key: str, tag: str) -> ManifestRow:
        try:
            row = await self._fetch(repo, tag, mt.DEFAULT_ACCEPT, None)
        except RegistryError as error:
            if error.code is ErrorCode.MANIFEST_UNKNOWN:
                await self.index.delete_tag(key, tag)
            raise
        await self.index.put_tag(key, tag, row.digest, row.media_type)
        return row

    async def _passthrough(
        self, repo: Repository, tag: str, accept: tuple[str, ...]
    ) -> ManifestRow:
        """A client that takes none of what the tag holds: ask upstream in its words."""
        return await self._fetch(repo, tag, accept, None)

    async def _fetch(
        self, repo: Repository, reference: str, accept: tuple[str, ...], expected: Digest | None
    ) -> ManifestRow:
        self.metrics.upstream_manifest_fetch()
        response = await self.upstream.send(
            "GET",
            repo,
            f"/manifests/{reference}",
            headers={"Accept": ", ".join(accept)},
            stream=True,
        )
        try:
            if response.status_code != 200:
                body = await read_error_body(response)
                raise errors.from_response(response, body, not_found=ErrorCode.MANIFEST_UNKNOWN)
            digest = expected or _header_digest(response)
            length = response.headers.get("content-length")
            size = int(length) if length and length.isdigit() else None
            if size is not None and size > self.settings.manifest_max_bytes:
                raise RegistryError(
                    ErrorCode.MANIFEST_INVALID,
                    f"manifest of {size} bytes is over the limit of "
                    f"{self.settings.manifest_max_bytes} (cache.manifest_max_size)",
                )
            if size is not None and size > MANIFEST_READ_LIMIT and digest is not None:
                return await self._fetch_large(response, digest)
            body = await self._read(response)
        finally:
            await response.aclose()
        return await self._store(body, _content_type(response), digest)

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            return await read_limited(response, MANIFEST_READ_LIMIT)
        except ValueError:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                "upstream manifest is over 4 MiB and came without a length or digest",
            ) from None

    async def _store(self, body: bytes, media_type: str, digest: Digest | None) -> ManifestRow:
        actual = Digest.of(body, digest.algorithm if digest else "sha256")
        if digest is not None and actual != digest:
            log.error("upstream manifest for %s hashed to %s; not cached", digest, actual)
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"upstream manifest does not match its digest {digest}",
                detail={"expected": str(digest), "actual": str(actual)},
                status=502,
            )
        row = ManifestRow(actual, media_type, len(body), body)
        await self.index.put_manifest(row, _children(body, media_type))
        return row

    async def _fetch_large(self, response: httpx.Response, digest: Digest) -> ManifestRow:
        """Stream a big manifest into the blob store, verified, never held in memory."""

        async def opened() -> httpx.Response:
            return response

        fill = self.cache.fill(digest, opened)
        await fill.wait()
        row = ManifestRow(digest, _content_type(response), fill.written, None)
        try:
            children = await asyncio.to_thread(_children_in_file, self.cache.store.path(digest))
        except FileNotFoundError:
            children = []  # evicted already; fetched again (with children) when asked
        await self.index.put_manifest(row, children)
        return row


def _header_digest(response: httpx.Response) -> Digest | None:
    header = response.headers.get("docker-content-digest")
    try:
        return Digest.parse(header) if header else None
    except RegistryError:
        return None
