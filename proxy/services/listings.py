"""Tag lists and referrers: passed through, remembered for offline use and outages.

GAR's tag list is GCR-shaped (``child``, ``manifest``, ``name``, ``tags``: docs/GAR.md
N3) and passes through as it is. Its Docker API lists at most 10,000 images or tags
(N4): a whole list that long is passed on too, with a warning (once per repository)
that it may be incomplete, since GAR does not say so itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from proxy.cache.index import CacheIndex
from proxy.clock import SYSTEM, Clock
from proxy.config import CacheSettings
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.links import cursor, next_link, next_target, page_link, page_size
from proxy.oci.names import Repository
from proxy.upstream.registry import Document, ListingTooLarge, Registry

log = logging.getLogger("gar_proxy.listings")
LISTING_LIMIT = 8 * 1024 * 1024
# Tags asked for per page when a whole tag list would be over the limit: the client
# gets the first page with a Link to the next, as the spec lets a registry answer.
PAGE_SIZE = 1000
# GAR's Docker API lists no more than this (docs/GAR.md N4); at it, the list may be cut.
GAR_LIST_LIMIT = 10_000
_WARNED_LIMIT = 4096  # repositories remembered as warned about


class Listing:
    def __init__(self, media_type: str, body: bytes, headers: dict[str, str]) -> None:
        self.media_type = media_type
        self.body = body
        self.headers = headers


class ListingService:
    def __init__(
        self,
        settings: CacheSettings,
        index: CacheIndex,
        registry: Registry,
        clock: Clock = SYSTEM,
    ) -> None:
        self.settings = settings
        self.index = index
        self.registry = registry
        self.clock = clock
        self.limit = LISTING_LIMIT
        self._warned: set[str] = set()

    async def tags(
        self,
        repo: Repository,
        n: str | None,
        last: str | None,
        *,
        client_name: str,
        keep: Mapping[str, str] = MappingProxyType({}),
    ) -> Listing:
        """A page of ``repo``'s tags; its ``Link`` names the proxy's own
        ``/v2/<client_name>/tags/list`` with ``keep`` (the query parameters that chose
        ``repo``, so the next page is of the same repository) and ``n``/``last``."""
        params = {k: v for k, v in (("n", n), ("last", last)) if v}
        # Only the whole list is kept (for outages): one row per repository, however
        # many n/last pages clients ask for.
        key = f"tags:{repo}?{{}}" if not params else None
        try:
            try:
                listing = await self._fetch(
                    lambda: self.registry.tags(repo, params, self.limit), key, fresh_for=0
                )
            except ListingTooLarge:
                if "n" in params:
                    raise
                page = {**params, "n": str(PAGE_SIZE)}
                listing = await self._fetch(
                    lambda: self.registry.tags(repo, page, self.limit), None, fresh_for=0
                )
        except RegistryError as error:
            if not (self.settings.offline or error.code.serve_stale):
                raise
            local = await self.index.tags.names(str(repo))
            if not local:
                raise
            body = json.dumps({"name": repo.path, "tags": local}).encode()
            return Listing("application/json", body, {})
        upstream_link = listing.headers.pop("link", None)
        if upstream_link:
            link = _next_page_link(upstream_link, listing.body, n, client_name, keep)
            if link:
                listing.headers["Link"] = link
        elif not params:
            self._warn_at_gar_limit(repo, listing.body)
        return listing

    def _warn_at_gar_limit(self, repo: Repository, body: bytes) -> None:
        """A whole list of GAR_LIST_LIMIT tags may be GAR's cut-off one (N4): say so."""
        if len(body) < GAR_LIST_LIMIT * 3 or str(repo) in self._warned:
            return  # too short to hold 10,000 tags ("a", is three bytes)
        try:
            count = len(json.loads(body).get("tags") or [])
        except (ValueError, AttributeError):
            return
        if count < GAR_LIST_LIMIT:
            return
        if len(self._warned) >= _WARNED_LIMIT:
            self._warned.clear()
        self._warned.add(str(repo))
        log.warning(
            "%s lists %d tags: Artifact Registry's Docker API lists at most %d, so the list "
            "may be incomplete (gcloud artifacts docker tags list and the REST API list all)",
            repo, count, GAR_LIST_LIMIT,
        )  # fmt: skip

    async def referrers(
        self,
        repo: Repository,
        digest: Digest,
        query: Mapping[str, str],
        *,
        client_name: str,
        keep: Mapping[str, str] = MappingProxyType({}),
    ) -> Listing:
        """A page of the referrers of ``digest``. ``query`` (the client's, less what
        chose ``repo``: ``artifactType``, and upstream's own cursor when the client
        follows a ``Link``) goes upstream as it is; the answer's ``Link`` names the
        proxy's ``/v2/<client_name>/referrers/<digest>`` with ``keep`` and that cursor,
        so a client pages the same repository on the spelling it used."""
        params = {k: v for k, v in query.items() if v or k != "artifactType"}
        # Only first pages are kept (for outages), one per filter: a cursor is upstream's.
        first = set(params) <= {"artifactType"}
        key = f"referrers:{repo}@{digest}?{params.get('artifactType', '')}" if first else None
        listing = await self._fetch(
            lambda: self.registry.referrers(repo, digest, params, self.limit),
            key,
            fresh_for=self.settings.tag_ttl,
        )
        upstream = cursor(listing.headers.pop("link", None))
        if upstream:
            path = f"/v2/{client_name}/referrers/{digest}"
            listing.headers["Link"] = page_link(path, keep, upstream)
        return listing

    async def _fetch(
        self, fetch: Callable[[], Awaitable[Document]], key: str | None, *, fresh_for: float
    ) -> Listing:
        """``key``: where the answer is kept for outages and offline use (None: not kept)."""
        cached = await self.index.documents.get(key) if key is not None else None
        if cached and (self.settings.offline or self.clock.time() - cached[3] < fresh_for):
            return Listing(cached[0], cached[1], json.loads(cached[2]))
        if self.settings.offline:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, "no cached listing for this (offline)")
        try:
            document = await fetch()
        except RegistryError as error:
            if cached and error.code.serve_stale and not isinstance(error, ListingTooLarge):
                log.warning("serving cached %s: %s", key, error.message)
                return Listing(cached[0], cached[1], json.loads(cached[2]))
            raise
        headers = dict(document.headers)
        if key is not None:
            await self.index.documents.put(
                key, document.media_type, document.body, json.dumps(headers)
            )
        return Listing(document.media_type, document.body, headers)


def _next_page_link(
    upstream: str, body: bytes, n: str | None, client_name: str, keep: Mapping[str, str]
) -> str | None:
    """Upstream's next page as a ``Link`` to the proxy (never upstream's URL, which a
    client cannot reach with its credentials). ``n`` is upstream's (it may have asked a
    page size of its own), else the client's; ``last`` is upstream's, else this page's
    last tag (the spec's rule for building the next request). None when there is no
    next page to name: no ``rel="next"``, ``n=0`` (the spec forbids a Link then), or
    neither a ``last`` nor a tag on the page."""
    target = next_target(upstream)
    if target is None or n == "0":
        return None
    last = target.get("last") or _last_tag(body)
    if not last:
        return None
    size = page_size(target.get("n")) or n
    return next_link(f"/v2/{client_name}/tags/list", keep, size, last)


def _last_tag(body: bytes) -> str | None:
    try:
        tags = json.loads(body).get("tags") or []
    except (ValueError, AttributeError):
        return None
    return tags[-1] if tags and isinstance(tags[-1], str) else None
