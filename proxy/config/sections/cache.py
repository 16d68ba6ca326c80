"""``[cache]``: what is cached, where, and how long it is fresh (tags' TTLs and
policies, revalidation, stale serving, eviction, warming, the shared tier)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.config.fields import setting
from proxy.config.tag_policies import TagRule, parse_tag_policies
from proxy.config.values import (
    SharedBucket,
    WarmSchedule,
    parse_bool,
    parse_duration,
    parse_path,
    parse_shared_bucket,
    parse_size,
    parse_warm_schedule,
)


@dataclass(frozen=True)
class CacheSettings:
    """What is cached, where, and for how long."""

    dir: Path = setting(
        Path("~/.cache/gar-proxy"), parse_path,
        doc="where blobs and the index live; default: $XDG_CACHE_HOME/gar-proxy",
    )  # fmt: skip
    max_size: int = setting(50 * 1024**3, parse_size, doc="evict least recently used above this")
    min_free: int = setting(
        1024**3, parse_size, doc="/readyz fails when the cache disk has less free space"
    )
    tag_ttl: float = setting(60.0, parse_duration, doc="a tag is answered locally this long")
    revalidate_window: float = setting(
        300.0, parse_duration,
        doc="past a tag's TTL, answer from the cache and revalidate in the background for "
        "this long; then a request waits for upstream (0: always wait)",
    )  # fmt: skip
    tag_policies: tuple[TagRule, ...] = setting(
        (), parse_tag_policies,
        doc="repository prefix and/or tag regex -> ttl or immutable; "
        "first match wins",
    )  # fmt: skip
    max_stale: float = setting(
        7 * 24 * 3600.0, parse_duration, doc="serve a stale tag this long while upstream is down"
    )
    stale_recheck: float = setting(
        10.0, parse_duration,
        doc="after a failed revalidation, serve that tag stale without asking again this long",
    )  # fmt: skip
    manifest_max_size: int = setting(64 * 1024**2, parse_size, doc="larger manifests are refused")
    fill_timeout: float = setting(3600.0, parse_duration, doc="one blob download may take this")
    offline: bool = setting(False, parse_bool, doc="never call upstream; serve the cache only")
    max_age: float = setting(
        0.0, parse_duration, doc="evict what was not read for this long (30d); 0: never"
    )
    negative_ttl: float = setting(
        30.0, parse_duration, doc="remember an upstream 404 this long; 0 turns it off"
    )
    warm: tuple[WarmSchedule, ...] = setting(
        (), parse_warm_schedule,
        doc="images whose matching tags, and images files name, are kept cached "
        "(environment: JSON)",
    )  # fmt: skip
    shared: SharedBucket | None = setting(
        None, parse_shared_bucket,
        doc="gs://BUCKET/PREFIX: a blob tier in Cloud Storage that replicas read before GAR "
        "and write after it",
    )  # fmt: skip
