"""``gar-proxy push``: an OCI image layout straight to upstream, blobs in parallel.

    gar-proxy push ./layout:v1 my-proj/my-repo/app:v1

As in the seed's section 6.1: every blob of the image (of each image, for an index)
is uploaded with bounded concurrency (``server.push_concurrency``, default 5) and
skipped when upstream already has it (one HEAD); then the child manifests, by
digest; then the manifest itself under the target's tag. Each blob goes up in one
write (``PUT ?digest=`` with the file, on a new session), as GAR takes uploads (no
chunks: docs/GAR.md). A write that fails is written again from the file to a fresh
session, up to ``MAX_RESUMES`` times. The first blob that fails for good cancels the
others (fail fast: no manifest is pushed over missing blobs). It talks to upstream
directly with the proxy's credentials through ``Upstream`` (so the same quotas and
retries apply), never through a running proxy, and caches nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxy.commands.progress import Progress, Task
from proxy.config import Settings
from proxy.human import human_size
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT, parse_manifest
from proxy.oci.names import ImageReference, Repository
from proxy.services.blob_copy import write_whole
from proxy.services.container import open_services
from proxy.upstream.registry import Registry

READ_SIZE = 1024 * 1024
MAX_RESUMES = 3  # failed writes of one blob, each then started again, before it fails
REF_NAME = "org.opencontainers.image.ref.name"
Say = Callable[[str], None]


class LayoutError(ValueError):
    """The directory is not an OCI image layout holding what was asked for."""


@dataclass
class Plan:
    """What to send: blobs (digest -> size), child manifests, then the top manifest."""

    top: tuple[Digest, str, bytes]
    children: list[tuple[Digest, str, bytes]] = field(default_factory=list)
    blobs: dict[Digest, int] = field(default_factory=dict)


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
            raise LayoutError(f"{root} is not an OCI image layout (no oci-layout, index.json)")

    def blob(self, digest: Digest) -> Path:
        path = self.root / "blobs" / digest.algorithm / digest.hex
        if not path.is_file():
            raise LayoutError(f"{self.root} lacks blob {digest}")
        return path

    def entry(self, tag: str | None) -> tuple[Digest, str]:
        manifests = json.loads((self.root / "index.json").read_bytes()).get("manifests") or []
        chosen = [
            m for m in manifests if tag is None or m.get("annotations", {}).get(REF_NAME) == tag
        ]
        if len(chosen) != 1:
            what = f"tag {tag!r}" if tag else "exactly one manifest (name a tag: DIR:TAG)"
            raise LayoutError(f"{self.root}/index.json does not hold {what}")
        return Digest.parse(chosen[0]["digest"]), str(chosen[0].get("mediaType", ""))

    def manifest(self, digest: Digest, media_type: str) -> tuple[Digest, str, bytes]:
        path = self.blob(digest)
        if path.stat().st_size > MANIFEST_READ_LIMIT:
            raise LayoutError(f"manifest {digest} is over {MANIFEST_READ_LIMIT} bytes")
        body = path.read_bytes()
        return digest, parse_manifest(body, media_type or None).media_type, body

    def plan(self, tag: str | None) -> Plan:
        top = self.manifest(*self.entry(tag))
        plan = Plan(top)
        parsed = parse_manifest(top[2], top[1])
        images = [parsed]
        for child in parsed.manifests:
            plan.children.append(self.manifest(child.digest, child.media_type))
            images.append(parse_manifest(plan.children[-1][2], plan.children[-1][1]))
        for image in images:
            for descriptor in image.blobs:
                plan.blobs[descriptor.digest] = self.blob(descriptor.digest).stat().st_size
        return plan


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, streamed a piece at a time."""
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, READ_SIZE):
            yield chunk


class Pusher:
    def __init__(
        self, registry: Registry, repo: Repository, say: Say, task: Task | None = None
    ) -> None:
        self.registry = registry
        self.repo = repo
        self.say = say
        self.task = task or Task()

    async def blob(self, digest: Digest, path: Path, size: int) -> None:
        if await self.registry.stat_blob(self.repo, digest) is not None:
            self.say(f"blob {digest} exists ({human_size(size)})")
            self.task.advance(size)
            return

        async def from_file() -> tuple[AsyncIterator[bytes], int]:
            return _file_chunks(path), size

        def again(error: RegistryError) -> None:
            self.say(f"blob {digest}: write failed ({error.message}); writing it again")

        await write_whole(
            self.registry, self.repo, digest, from_file,
            attempts=MAX_RESUMES + 1, on_retry=again,
        )  # fmt: skip
        self.task.advance(size)
        self.say(f"blob {digest} pushed ({human_size(size)})")

    async def manifest(self, reference: str | Digest, media_type: str, body: bytes) -> Digest:
        await self.registry.put_manifest(self.repo, reference, media_type, body)
        digest = Digest.of(body)
        self.say(f"manifest {digest} pushed as {reference}")
        return digest


async def push_layout(
    registry: Registry,
    layout_dir: Path,
    tag: str | None,
    target: ImageReference,
    *,
    concurrency: int,
    say: Say = print,
) -> Digest:
    """Push an OCI layout's image (or index) to ``target``; returns its manifest digest."""
    layout = Layout(layout_dir)
    plan = layout.plan(tag)
    total = sum(plan.blobs.values())
    say(
        f"pushing {len(plan.blobs)} blobs ({human_size(total)}), {1 + len(plan.children)} manifests"
    )
    with Progress.for_output(say) as progress:
        pusher = Pusher(registry, target.repository, progress.say, progress.task("pushing", total))
        await _push_blobs(pusher, layout, plan, concurrency)
        for child_digest, media_type, body in plan.children:
            await pusher.manifest(child_digest, media_type, body)
        _, media_type, body = plan.top
        return await pusher.manifest(target.reference, media_type, body)


async def _push_blobs(pusher: Pusher, layout: Layout, plan: Plan, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def bounded(digest: Digest, size: int) -> None:
        async with limit:
            await pusher.blob(digest, layout.blob(digest), size)

    try:
        async with asyncio.TaskGroup() as group:
            for digest, size in plan.blobs.items():
                group.create_task(bounded(digest, size))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first failure; the others were cancelled


def _split_source(source: str) -> tuple[Path, str | None]:
    """``DIR`` or ``DIR:TAG`` (a directory whose own name has a colon wins)."""
    directory, colon, tag = source.rpartition(":")
    if not colon or Path(source).is_dir() or "/" in tag:
        return Path(source), None
    return Path(directory), tag


async def run(settings: Settings, source: str, target: str, say: Say = print) -> int:
    """The CLI command; 0 on success, 1 with a message on stderr otherwise."""
    try:
        async with open_services(settings) as services:
            image = ImageReference.parse(target)
            repo = await services.locations.resolve(image.repository)
            image = ImageReference(repo, image.reference)
            directory, tag = _split_source(source)
            digest = await push_layout(
                services.registry, directory, tag, image,
                concurrency=settings.server.push_concurrency, say=say,
            )  # fmt: skip
        say(f"pushed {image.repository}@{digest}")
        return 0
    except (RegistryError, LayoutError, OSError) as error:
        print(f"gar-proxy push: {getattr(error, 'message', error)}", file=sys.stderr)
        return 1


__all__ = ["Layout", "LayoutError", "Plan", "push_layout", "run"]
