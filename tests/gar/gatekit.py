"""Shared by the gate tests: the fake GAR with a fake Container Analysis in front."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_analysis import FakeAnalysis
from testkit.images import Image, build_image, make_layer
from testkit.servers import serve_in_thread


@dataclass
class Upstreams:
    gar: FakeGAR
    analysis: FakeAnalysis
    url: str  # the registry (under /{location}) and both REST APIs

    @property
    def upstream(self) -> str:
        return self.url + "/{location}"

    def resource_url(self, repo: str, digest: str, location: str = "us") -> str:
        return f"https://{location}-docker.pkg.dev/{repo}@{digest}"

    def image(self, repo: str, tag: str, seed: str, location: str = "us") -> Image:
        image = build_image([make_layer({"f": seed.encode()})])
        self.gar.put_image(location, repo, tag, image)
        return image

    def gate_settings(self, **keys: str) -> dict[str, str]:
        return {
            "apis__container_analysis": self.url,
            "vulnerability_gate__enabled": "true",
            **{f"vulnerability_gate__{key}": value for key, value in keys.items()},
        }


@contextlib.contextmanager
def upstreams() -> Iterator[Upstreams]:
    gar, analysis = FakeGAR(auth="none"), FakeAnalysis()
    with serve_in_thread(analysis.in_front_of(gar)) as url:
        yield Upstreams(gar, analysis, url)
