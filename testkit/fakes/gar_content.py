"""Content of the fake GAR: repositories, blobs, manifests and tags, and how tests
seed and read them.

``ContentMixin`` keeps repositories apart from the images in them: a repository exists
once created (``add_repository``, or any seeding, as ``gcloud artifacts repositories
create`` would have made it), and a push through the registry API never creates one
(docs/GAR.md A9) unless ``auto_create_repositories`` plays a plain OCI registry. Image
paths map to repositories as GAR's names do (N5: ``example.com/proj`` is the
domain-scoped project ``example.com:proj``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from testkit.fakes.gar_iam import RepositoryKey, repository_not_found
from testkit.fakes.gar_model import Buffer, GarRepository, _ApiError, _ImageRepo, _Manifest, _sha
from testkit.fakes.gar_shapes import Schema1Digest, manifest_digest
from testkit.images import Image, Index


class ContentMixin:
    """Repositories and their content; part of ``FakeGAR``."""

    # Provided by FakeGAR.
    locations: set[str]
    repositories: dict[RepositoryKey, GarRepository]
    auto_create_repositories: bool
    schema1_digest: Schema1Digest
    _blobs: dict[str, Buffer]
    _images: dict[tuple[str, str], _ImageRepo]
    _lock: threading.RLock

    def add_repository(
        self,
        location: str,
        project: str,
        repository: str,
        cleanup_policies: dict[str, Any] | None = None,
        **fields: Any,
    ) -> GarRepository:
        """Create (or return) a GAR repository; extra fields: format, mode, dry run."""
        with self._lock:
            self.locations.add(location)
            key = (location, project, repository)
            if key not in self.repositories:
                self.repositories[key] = GarRepository(
                    location, project, repository, cleanup_policies=cleanup_policies, **fields
                )
            elif cleanup_policies is not None:
                self.repositories[key].cleanup_policies = cleanup_policies
            return self.repositories[key]

    def _gar_key(self, location: str, name: str) -> RepositoryKey:
        """(location, project, repository) of an image path. A domain-scoped project
        ``example.com:proj`` is written ``example.com/proj`` in image names (N5): GAR
        project ids have no dots, so a dotted first segment is such a domain."""
        parts = name.split("/")
        domain = "." in parts[0]
        if len(parts) < (3 if domain else 2) or not all(parts):
            raise _ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
        if domain:
            return location, f"{parts[0]}:{parts[1]}", parts[2]
        return location, parts[0], parts[1]

    def _repo(self, location: str, name: str, *, create: bool = False) -> _ImageRepo:
        """The image's content; ``create`` (a push) makes its repository only with
        ``auto_create_repositories``: GAR answers NAME_UNKNOWN instead (A8, A9)."""
        key = self._gar_key(location, name)
        with self._lock:
            if key not in self.repositories:
                if not (create and self.auto_create_repositories):
                    raise repository_not_found(key)
                self.add_repository(*key)
            return self._images.setdefault((location, name), _ImageRepo())

    def _seeding(self, location: str, name: str) -> None:
        """Test seeding creates the repository, as ``gcloud artifacts repositories
        create`` would have before anything was pushed."""
        self.add_repository(*self._gar_key(location, name))

    def put_blob(self, location: str, repo: str, data: bytes) -> str:
        digest = _sha(data)
        self._seeding(location, repo)
        self._link_blob(location, repo, digest, data)
        return digest

    def _link_blob(self, location: str, name: str, digest: str, data: Buffer) -> None:
        image_repo = self._repo(location, name, create=True)
        with self._lock:
            self._blobs.setdefault(digest, data)
            image_repo.blobs.add(digest)

    def put_manifest(
        self, location: str, repo: str, reference: str | None, data: bytes, media_type: str
    ) -> str:
        """Store manifest bytes (no checks; a test seeding creates the repository); tag
        them when ``reference`` is a tag."""
        self._seeding(location, repo)
        return self._store_manifest(location, repo, reference, data, media_type)

    def _store_manifest(
        self, location: str, repo: str, reference: str | None, data: bytes, media_type: str
    ) -> str:
        digest = manifest_digest(data, media_type, self.schema1_digest)
        doc = json.loads(data)
        subject = doc.get("subject")
        stored = _Manifest(
            data,
            media_type,
            subject.get("digest") if isinstance(subject, dict) else None,
            doc.get("artifactType") or (doc.get("config") or {}).get("mediaType"),
            doc.get("annotations"),
            size=self._image_size(doc, len(data)),
        )
        image_repo = self._repo(location, repo, create=True)
        with self._lock:
            image_repo.manifests[digest] = stored
            if reference and not reference.startswith(("sha256:", "sha512:")):
                image_repo.tags[reference] = digest
        return digest

    def _image_size(self, doc: dict[str, Any], own: int) -> int:
        """What the tag list reports as ``imageSizeBytes``: the manifest and what it
        references (N3; GAR's exact sum is unknown)."""
        layers = doc.get("layers")
        descriptors = [doc.get("config"), *(layers if isinstance(layers, list) else [])]
        sizes = [d.get("size") for d in descriptors if isinstance(d, dict)]
        return own + sum(s for s in sizes if isinstance(s, int))

    def put_image(self, location: str, repo: str, tag: str | None, image: Image | Index) -> str:
        """Seed an image or index (its images and blobs too); returns the manifest digest."""
        self._seeding(location, repo)
        for blob in image.blobs:
            self._link_blob(location, repo, blob.digest, blob.data)
        if isinstance(image, Index):
            for child in image.images:
                self.put_manifest(location, repo, None, child.manifest, child.media_type)
        return self.put_manifest(location, repo, tag, image.manifest, image.media_type)

    put_index = put_image

    def get_blob(self, location: str, repo: str, digest: str) -> bytes | None:
        with self._lock:
            image_repo = self._images.get((location, repo))
            if image_repo is None or digest not in image_repo.blobs:
                return None
            return bytes(self._blobs[digest])

    def get_manifest(self, location: str, repo: str, ref: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of a manifest by tag or digest, or None."""
        with self._lock:
            image_repo = self._images.get((location, repo))
            if image_repo is None:
                return None
            stored = image_repo.manifests.get(image_repo.tags.get(ref, ref))
            return (stored.data, stored.media_type) if stored else None

    def tags(self, location: str, repo: str) -> dict[str, str]:
        with self._lock:
            image_repo = self._images.get((location, repo))
            return dict(image_repo.tags) if image_repo else {}

    def delete_tag(self, location: str, repo: str, tag: str) -> None:
        with self._lock:
            self._images.get((location, repo), _ImageRepo()).tags.pop(tag, None)
