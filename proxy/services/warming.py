"""Warming: pre-pull an image into the cache, through the same services a client's
pull uses, so what it caches is verified exactly as a pull would be.

``gar-proxy warm`` (``proxy/commands/warm.py``) and scheduled warming
(``proxy/services/scheduled_warm.py``) both call ``warm``; what it reports goes to a
``Reporter``: the CLI's draws a progress bar, the others write lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from proxy.human import human_size
from proxy.oci.digest import Digest
from proxy.oci.manifest import Manifest, parse_manifest
from proxy.oci.names import ImageReference, Repository
from proxy.oci.platform import Platform
from proxy.services.answers import Answer
from proxy.services.container import Services

Say = Callable[[str], None]


class Reporter(Protocol):
    """Where a warm reports: the bytes to come, the bytes done, and lines of text."""

    def start(self, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def say(self, text: str) -> None: ...


class Lines:
    """A ``Reporter`` that writes lines only (scheduled warming, tests)."""

    def __init__(self, say: Say) -> None:
        self._say = say

    def start(self, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def say(self, text: str) -> None:
        self._say(text)


async def _chunks(answer: Answer) -> AsyncIterator[bytes]:
    if isinstance(answer.body, bytes):
        yield answer.body
    elif answer.body is not None:
        async for chunk in answer.body:
            yield chunk


async def _drain(answer: Answer, report: Reporter) -> int:
    size = 0
    async for chunk in _chunks(answer):
        size += len(chunk)
        report.advance(len(chunk))
    return size


async def resolve(services: Services, image: ImageReference) -> Repository:
    """As a client's name is: a mirrored registry's name (``docker.io/library/python``)
    reads the mirror's repository."""
    mirrored = None
    if image.repository.location is None:
        mirrored = services.mirrors.rewrite(image.repository.path, ns=None)
    return await services.locations.resolve(mirrored or image.repository)


async def _manifest(
    services: Services, repo: Repository, reference: str | Digest
) -> tuple[Digest, Manifest]:
    answer = await services.manifests.get(repo, reference, (), head=False)
    body = b"".join([chunk async for chunk in _chunks(answer)])  # bounded by manifest_max_size
    return answer.digest, parse_manifest(body, answer.media_type)


def choose(manifest: Manifest, wanted: list[Platform]) -> list[Digest]:
    """Child manifests of an index for the wanted platforms (all when none asked)."""
    if not wanted:
        return [d.digest for d in manifest.manifests]
    chosen = []
    for platform in wanted:
        match = next(
            (
                d
                for d in manifest.manifests
                if d.platform is not None and d.platform.matches(platform)
            ),
            None,
        )
        if match is None:
            available = ", ".join(str(p) for p in manifest.platforms()) or "none"
            raise ValueError(f"platform {platform} is not in the index; available: {available}")
        chosen.append(match.digest)
    return chosen


async def _check_single_platform(
    services: Services, repo: Repository, manifest: Manifest, wanted: list[Platform]
) -> None:
    """A single-platform image: its config says which platform it is; refuse a mismatch."""
    assert manifest.config is not None
    answer = await services.blobs.get(repo, manifest.config.digest, None)
    config = json.loads(b"".join([chunk async for chunk in _chunks(answer)]))
    own = Platform(
        str(config.get("os", "")), str(config.get("architecture", "")), config.get("variant")
    )
    if not any(own.matches(platform) for platform in wanted):
        asked = ", ".join(map(str, wanted))
        raise ValueError(f"single-platform image for {own}, not {asked}")


async def warm(
    services: Services,
    text: str,
    platforms: list[Platform],
    *,
    pin: bool,
    report: Reporter | None = None,
    strict: bool = True,
    all_platforms: bool = False,
) -> None:
    """Without ``platforms``, an index is warmed for this machine's platform (what
    ``docker pull`` would fetch here), or for every one with ``all_platforms``.
    ``strict=False``: a single-platform image is warmed whatever its platform (the
    platforms only choose among an index's images)."""
    image = ImageReference.parse(text)
    repo = await resolve(services, image)
    await warm_image(
        services, repo, image.reference, platforms, pin=pin, report=report, strict=strict,
        all_platforms=all_platforms, label=str(image),
    )  # fmt: skip


async def warm_image(
    services: Services,
    repo: Repository,
    reference: str | Digest,
    platforms: list[Platform],
    *,
    pin: bool,
    report: Reporter | None = None,
    strict: bool = True,
    all_platforms: bool = False,
    label: str = "",
) -> None:
    """``warm`` of a repository already resolved (``proxy.services.warm_files``)."""
    report = report or Lines(lambda _: None)
    digest, manifest = await _manifest(services, repo, reference)
    report.say(f"{label or repo}: {manifest.media_type} {digest}")
    images: list[tuple[Digest, Manifest]] = [(digest, manifest)]
    if manifest.is_index:
        wanted = platforms or ([] if all_platforms else [Platform.host()])
        images = [await _manifest(services, repo, child) for child in choose(manifest, wanted)]
    elif strict and platforms and manifest.config is not None:
        await _check_single_platform(services, repo, manifest, platforms)
    await _blobs(services, repo, images, report, pin=pin)
    if pin:
        await services.index.pins.add([digest])


async def _blobs(
    services: Services,
    repo: Repository,
    images: list[tuple[Digest, Manifest]],
    report: Reporter,
    *,
    pin: bool,
) -> None:
    tally = {"cached": [0, 0], "fetched": [0, 0]}  # blobs, bytes
    report.start(sum(d.size for _, child in images for d in child.blobs))
    for child_digest, child in images:
        for descriptor in child.blobs:
            cached = services.cache.size(descriptor.digest) is not None
            size = await _drain(await services.blobs.get(repo, descriptor.digest, None), report)
            counts = tally["cached" if cached else "fetched"]
            counts[0], counts[1] = counts[0] + 1, counts[1] + size
            state = "already cached" if cached else "fetched"
            report.say(f"  {descriptor.digest}  {human_size(size):>10}  {state}")
        if pin:
            await services.index.pins.add([child_digest])
    (hit, hit_bytes), (got, got_bytes) = tally["cached"], tally["fetched"]
    report.say(
        f"warmed {len(images)} image(s), {human_size(hit_bytes + got_bytes)} of blobs: "
        f"{hit} already cached ({human_size(hit_bytes)}), {got} fetched ({human_size(got_bytes)})"
    )
