"""Manifest PUT and DELETE: validated, forwarded to upstream, then cached.

A manifest is checked before upstream sees it: JSON shape, media type, digest (when
pushed by digest), and that every blob and child manifest it references is in the
repository upstream. A blob HEAD upstream is the authority: a cached blob counts
only once it is upstream too, so a blob the cache holds but upstream lacks (a client
trusted the proxy's cached HEAD and skipped it) is uploaded from the cache first, when
the cache may lend it to this caller (``MountService.lendable``: the repository's own
scope, or one the caller may pull).
What upstream accepted is cached under its digest and, for a tag, the tag.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.cache.index import CacheIndex
from proxy.cache.manifest_rows import ManifestRow
from proxy.config import ServerSettings
from proxy.oci import mediatypes as mt
from proxy.oci import schema1
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import Manifest, parse_manifest
from proxy.oci.names import Repository
from proxy.services.mounts import MountService, Readable
from proxy.services.negative import MANIFEST, NegativeCache
from proxy.upstream.registry import Registry

log = logging.getLogger("gar_proxy.manifest_writes")
# How many missing references a refused manifest PUT names before it stops looking.
MISSING_REPORTED = 3


@dataclass(frozen=True)
class Pushed:
    digest: Digest
    subject: str | None  # upstream's OCI-Subject, passed on


def _foreign_layers(document: dict[str, Any]) -> set[str]:
    """Digests of descriptors with ``urls`` (non-distributable layers): not in registries."""
    layers = document.get("layers")
    if not isinstance(layers, list):
        return set()
    return {
        str(layer.get("digest"))
        for layer in layers
        if isinstance(layer, dict) and layer.get("urls")
    }


def _check_media_type(document: dict[str, Any], content_type: str | None) -> None:
    declared = (content_type or "").split(";")[0].strip()
    inside = document.get("mediaType")
    if inside and declared in mt.MANIFEST_TYPES and declared != inside:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"Content-Type {declared} does not match the manifest's mediaType {inside}",
        )


class ManifestWriteService:
    def __init__(
        self,
        settings: ServerSettings,
        index: CacheIndex,
        registry: Registry,
        mounts: MountService,
        missing: NegativeCache | None = None,
    ) -> None:
        self.missing = missing or NegativeCache(0)
        self.settings = settings
        self.index = index
        self.registry = registry
        self.mounts = mounts

    async def put(
        self,
        repo: Repository,
        reference: str | Digest,
        content_type: str | None,
        body: bytes,
        readable: Readable = None,
    ) -> Pushed:
        """``readable``: what the caller may pull (None: everything), which bounds what
        the cache may complete the manifest's references with."""
        manifest = parse_manifest(body, content_type)  # a JSON object, or MANIFEST_INVALID
        document: dict[str, Any] = json.loads(body)
        _check_media_type(document, content_type)
        media_type = manifest.media_type
        algorithm = reference.algorithm if isinstance(reference, Digest) else "sha256"
        # Two names for a signed schema-1 manifest (docs/GAR.md N2), one for the rest.
        names = schema1.digests(body, media_type, algorithm)
        digest = reference if isinstance(reference, Digest) and reference in names else names[0]
        if isinstance(reference, Digest) and reference != digest:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"manifest hashes to {digest}, not {reference}",
                detail={"expected": str(reference), "actual": str(digest)},
            )
        await self._check_references(repo, manifest, _foreign_layers(document), readable)
        put = await self.registry.put_manifest(repo, reference, media_type, body)
        if put.digest is not None and put.digest != digest and put.digest in names:
            digest = put.digest  # upstream names a signed schema-1 manifest the other way
        elif put.digest is not None and put.digest != digest:
            # 201 only for what upstream holds at the digest of the bytes pushed.
            if await self.registry.head_manifest(repo, digest, (media_type,)) is None:
                raise RegistryError(
                    ErrorCode.UPSTREAM_CORRUPT,
                    f"upstream stored the manifest as {put.digest}, not {digest}; "
                    f"{repo.path}@{digest} does not exist upstream",
                )
            log.info(
                "upstream reported %s for manifest %s, which it also holds", put.digest, digest
            )
        children = [d.digest for d in (*manifest.blobs, *manifest.manifests)]
        await self.index.manifests.put(ManifestRow(digest, media_type, len(body), body), children)
        await self.index.scopes.add(str(repo), digest)
        if isinstance(reference, str):
            await self.index.tags.put(str(repo), reference, digest, media_type)
        self.missing.forget(MANIFEST, str(repo), str(reference), str(digest))  # pullable at once
        if manifest.subject is not None:  # the subject's cached referrers list is now short
            await self.index.documents.delete_prefix(f"referrers:{repo}@{manifest.subject.digest}?")
        return Pushed(digest, put.subject)

    async def _check_references(
        self, repo: Repository, manifest: Manifest, foreign: set[str], readable: Readable
    ) -> None:
        """Every referenced blob and child manifest is upstream (pushed from the cache if
        only the cache has it), checked ``push_concurrency`` at a time; stops once a few
        are missing, so a manifest naming thousands of unknown layers costs a few
        upstream calls, not thousands."""
        blobs = sorted({d.digest for d in manifest.blobs if str(d.digest) not in foreign}, key=str)
        children = sorted({d.digest for d in manifest.manifests}, key=str)
        checks: list[tuple[Digest, Callable[[], Awaitable[bool]]]] = [
            *[(d, functools.partial(self.mounts.ensure, repo, d, readable)) for d in blobs],
            *[(d, functools.partial(self._ensure_manifest, repo, d, readable)) for d in children],
        ]
        missing: list[str] = []
        width = self.settings.push_concurrency
        for start in range(0, len(checks), width):
            batch = checks[start : start + width]
            found = await asyncio.gather(*[check() for _, check in batch])
            missing += [str(d) for (d, _), ok in zip(batch, found, strict=True) if not ok]
            if len(missing) >= MISSING_REPORTED:
                break
        if missing:
            more = "" if len(missing) < MISSING_REPORTED else " (or more: stopped looking)"
            raise RegistryError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                f"{len(missing)}{more} referenced blob(s) or manifest(s) not in {repo.path} "
                f"upstream: {', '.join(missing)}",
                detail={"digest": missing[0]},
            )

    async def _ensure_manifest(self, repo: Repository, digest: Digest, readable: Readable) -> bool:
        """Whether upstream has this child manifest in ``repo``, after pushing it there
        from the cache if only the cache has it (and may lend it to this caller): a
        client copying an index may skip the children it believes are there (as it
        may skip blobs; ``mounts.ensure``)."""
        if await self._has_manifest(repo, digest):
            return True
        row = await self.index.manifests.get(digest)
        if row is None or row.body is None:  # unknown, or over 4 MiB: the client's job
            return False
        if not await self.mounts.lendable(repo, digest, readable):
            return False
        log.info("pushing manifest %s to %s from the cache", digest, repo)
        await self.put(repo, digest, row.media_type, row.body, readable)  # its references first
        return True

    async def _has_manifest(self, repo: Repository, digest: Digest) -> bool:
        info = await self.registry.head_manifest(repo, digest, tuple(mt.MANIFEST_TYPES))
        return info is not None

    async def delete(self, repo: Repository, reference: str | Digest) -> None:
        """Forwarded only when ``server.allow_delete``; the cached tag goes with it."""
        if not self.settings.allow_delete:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deleting through gar-proxy is disabled (server.allow_delete)",
            )
        deleted = await self.registry.delete_manifest(repo, reference)
        await self._forget(str(repo), reference)  # gone upstream, either way
        if not deleted:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, f"manifest {repo}:{reference} is not known upstream"
            )

    async def _forget(self, key: str, reference: str | Digest) -> None:
        if isinstance(reference, str):
            await self.index.tags.delete(key, reference)
            return
        # Gone upstream: the manifest leaves the cache (rows, memo, the tags naming it),
        # so it stops answering 200; another repository holding it is asked afresh.
        await self.index.manifests.remove([reference])
        await self.index.scopes.forget(key, reference)
