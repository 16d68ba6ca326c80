"""Hostile input, generated: whatever a client sends, the proxy answers it properly.

Hypothesis generates names, digests, references, headers (``Range``, ``Accept``,
``Content-Range``, ``Content-Type``, ``Content-Length``), query parameters (``n``,
``last``, ``ns``, ``mount``, ``from``, ``digest``) and manifest bodies, and sends each
to a real proxy in front of the fake GAR. After every request:

- no 5xx, no Python traceback in the body, no answer slower than 10 s;
- an error is the OCI envelope (the one exception: a request httptools cannot parse
  at all gets uvicorn's own ``400 Invalid HTTP request received.``, before any app);
- a name that is not a valid repository name cost no upstream request;
- no file appeared outside the cache directory (a sentinel directory beside it, the
  proxy's home and the working directory are listed before and after).

In CI each test tries 60 inputs, the same ones every run (the module sends some 800
requests in about 10 s). The full run draws new inputs each time, some 13,000 requests
in two to five minutes::

    HOSTILE_EXAMPLES=1000 PYTHONPATH=$PWD python -m pytest tests/test_hostile_input.py -q
"""

from __future__ import annotations

import http.client
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "60"))
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # writes no examples into the working tree
    derandomize="HOSTILE_EXAMPLES" not in os.environ,  # CI: the same inputs every run
    print_blob=True,  # a failure of a random full run says how to replay it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REPO = "proj/repo/app"
# The OCI distribution spec's grammar for a repository name, as a client-side oracle.
OCI_NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
UNPARSABLE = b"Invalid HTTP request received."
TRIED: list[str] = []  # one entry per request sent, for the summary


# --------------------------------------------------------------------------- the proxy


@dataclass
class World:
    proxy: RunningProxy
    fake: FakeGAR
    image: Image
    watched: list[Path]


def listing(paths: list[Path], cache: Path) -> set[str]:
    found: set[str] = set()
    for root in paths:
        for path in root.rglob("*"):
            outside = cache not in path.parents and path != cache
            # Python compiles lazy imports; hypothesis keeps a cache of its own; git
            # (other worktrees of this repository commit meanwhile) is not the proxy.
            ignored = {"__pycache__", ".hypothesis", ".git", ".pytest_cache", "build"}
            if outside and not ignored & set(path.parts):
                found.add(str(path))
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("hostile")
    (base / "outside").mkdir()
    (base / "outside" / "sentinel").write_text("untouched")
    fake = FakeGAR(auth="none")
    image = build_image([make_layer(size=2000)])
    fake.put_image("us", REPO, "1.0", image)
    with fake.serve() as url:
        options = proxy_settings(
            base,
            url + "/{location}",
            routing__resolve_locations="true",
            apis__artifact_registry=url,
            routing__routes="proj=us",
            transport__retries="0",
        )
        with run_proxy(options) as proxy:
            watched = [base, Path.cwd()]
            before = listing(watched, proxy.settings.cache.dir)
            yield World(proxy, fake, image, watched)
            after = listing(watched, proxy.settings.cache.dir)
            assert after - before == set(), "files created outside the cache directory"
            assert (base / "outside" / "sentinel").read_text() == "untouched"
    print(f"\nhostile input: {len(TRIED)} requests sent")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(
    world: World, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Answer:
    TRIED.append(f"{method} {path}")
    # SLOW is the socket's timeout: an answer that stalls longer fails the test.
    connection = http.client.HTTPConnection("127.0.0.1", world.proxy.server.port, timeout=SLOW)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value.encode("latin-1"))
        if body and "Content-Length" not in (headers or {}):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        answer = Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    except TimeoutError:
        pytest.fail(f"{method} {path[:200]}: no answer within {SLOW} s")
    finally:
        connection.close()
    check(method, path, answer)
    return answer


def check(method: str, path: str, answer: Answer) -> None:
    where = f"{method} {path[:200]} -> {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500, where
    for leak in (b"Traceback", b'File "/', b"site-packages"):
        assert leak not in answer.body, where
    if answer.status < 400 or method == "HEAD":
        return
    if answer.status == 400 and answer.body == UNPARSABLE:
        return
    envelope = json.loads(answer.body)
    assert set(envelope) == {"errors"}, where
    for error in envelope["errors"]:
        assert isinstance(error["code"], str) and isinstance(error["message"], str), where


def send_named(world: World, name: str, method: str, path: str, body: bytes = b"") -> Answer:
    """``send``; when ``name`` is not a valid repository name, upstream saw nothing."""
    before = world.fake.count()
    answer = send(world, method, path, body=body)
    if OCI_NAME.fullmatch(name) is None or len(name) > 255:
        assert answer.status >= 400, (name, answer.status)
        assert world.fake.count() == before, (name, world.fake.requests[before:])
    return answer


# --------------------------------------------------------------------------- strategies

printable = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(printable, max_size=300).map(str.strip)
# Sizes around the limits that matter: int()'s 4,300 digits, json's recursion, 64 KiB.
digits = st.one_of(st.integers(0, 25), st.sampled_from([4300, 4301, 5000])).map(lambda n: "9" * n)
depths = st.one_of(st.integers(1, 70), st.sampled_from([999, 1001, 100_000]))
long_accept = st.sampled_from([1000, 30_000]).map(
    lambda n: ", ".join(f"application/x-{i}" for i in range(n))
)
# No answer may take longer (a 300 KB Accept once took 15 s); generous for a busy CI box.
SLOW = float(os.environ.get("HOSTILE_SLOW_SECONDS", "10"))
number = st.one_of(st.integers(min_value=-5, max_value=10**30).map(str), digits, header_text)
segment = st.one_of(
    st.sampled_from(["proj", "repo", "app", "..", ".", "", "%2e%2e", "%2F", "a" * 300, "A"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), max_size=20),
    st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", fullmatch=True),
)
names = st.one_of(
    st.just(REPO),
    st.lists(segment, min_size=1, max_size=5).map("/".join),
    st.text(max_size=80),
)
hexes = st.text("0123456789abcdefABCDEF", min_size=0, max_size=130)
digest_strings = st.one_of(
    st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(["sha256", "sha512", "md5", ""]), hexes),
    st.text(max_size=80),
)
references = st.one_of(
    st.just("1.0"), digest_strings, st.text(max_size=140), st.from_regex(r"\w[\w.-]{0,140}")
)
ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", number, number),
    st.builds(lambda a: f"bytes=-{a}", number),
    header_text,
)
accepts = st.one_of(
    st.lists(st.sampled_from([*sorted(mt.MANIFEST_TYPES), "*/*", "a/b;q=0"]), max_size=8).map(
        ", ".join
    ),
    header_text,
    long_accept,
)
content_types = st.one_of(st.sampled_from(sorted(mt.MANIFEST_TYPES)), header_text)
queries = st.dictionaries(
    st.sampled_from(["n", "last", "ns", "mount", "from", "digest"]),
    st.one_of(number, digest_strings, names, st.text(max_size=60)),
    max_size=4,
)


def url(name: str, rest: str, query: dict[str, str] | None = None, *, raw: bool = False) -> str:
    """The request target; ``raw`` keeps client-side %-escapes for the server to decode."""
    encoded = quote(name, safe="/%" if raw else "/")
    return f"/v2/{encoded}/{quote(rest, safe='/:')}" + (f"?{urlencode(query)}" if query else "")


def served_name(name: str, raw: bool) -> str:
    """The name as the server sees it, after uvicorn's %-decoding."""
    return unquote(quote(name, safe="/%")) if raw else name


# --------------------------------------------------------------------------- the tests


@HOSTILE
@given(name=names, raw=st.booleans(), method=st.sampled_from(["GET", "HEAD", "DELETE", "PUT"]))
def test_names(world: World, name: str, raw: bool, method: str) -> None:
    digest = world.image.layers[0].digest
    for rest in ("manifests/1.0", f"blobs/{digest}", "tags/list", f"referrers/{digest}"):
        send_named(world, served_name(name, raw), method, url(name, rest, raw=raw))


@HOSTILE
@given(digest=digest_strings, reference=references, method=st.sampled_from(["GET", "HEAD"]))
def test_digests_and_references(world: World, digest: str, reference: str, method: str) -> None:
    for rest in (f"blobs/{digest}", f"manifests/{reference}", f"referrers/{digest}"):
        if rest.startswith("referrers") and method == "HEAD":
            continue
        send(world, method, url("other/repo/app", rest))


@HOSTILE
@given(range_header=ranges, accept=accepts, method=st.sampled_from(["GET", "HEAD"]))
def test_range_and_accept(world: World, range_header: str, accept: str, method: str) -> None:
    layer = world.image.layers[0]
    answer = send(world, method, url(REPO, f"blobs/{layer.digest}"), {"Range": range_header})
    if answer.status == 206 and method == "GET":
        assert answer.body in layer.data
    elif answer.status == 200 and method == "GET":
        assert answer.body == layer.data
    send(world, method, url(REPO, "manifests/1.0"), {"Accept": accept})


@HOSTILE
@given(query=queries, name=st.one_of(st.just(REPO), names))
def test_query_parameters(world: World, query: dict[str, str], name: str) -> None:
    send_named(world, name, "GET", url(name, "tags/list", query))
    send_named(world, name, "POST", url(name, "blobs/uploads/", query), body=b"x")


@HOSTILE
@given(
    content_range=st.one_of(
        st.builds(lambda a, b: f"{a}-{b}", number, number),
        st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", number, number, number),
        header_text,
    ),
    content_type=content_types,
    # Lengths that frame the 5-byte body, or that httptools refuses outright (overflow,
    # not a number); never one that leaves the server waiting for more body.
    length=st.one_of(
        st.none(),
        st.sampled_from(["0", "5", "00005", " 5", "-1", "5.0", "x", "", "5, 5"]),
        st.integers(min_value=25, max_value=6000).map(lambda n: "9" * n),
    ),
    method=st.sampled_from(["PATCH", "PUT"]),
)
def test_upload_headers(
    world: World, content_range: str, content_type: str, length: str | None, method: str
) -> None:
    started = send(world, "POST", url(REPO, "blobs/uploads/"))
    assert started.status == 202
    headers = {"Content-Range": content_range, "Content-Type": content_type}
    if length is not None:
        headers["Content-Length"] = length
    location = started.headers["location"]
    if method == "PUT":
        location += ("&" if "?" in location else "?") + "digest=sha256:" + "0" * 64
    body = b"" if length is not None and length.strip() == "0" else b"12345"
    send(world, method, location, headers, body)


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def _mutated(image: Image) -> st.SearchStrategy[bytes]:
    base = image.manifest_json()
    keys = st.sampled_from(
        ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject"]
    )

    def mutate(changes: dict[str, Any]) -> bytes:
        return json.dumps({**base, **changes}).encode()

    return st.dictionaries(keys, json_values, max_size=3).map(mutate)


@HOSTILE
@given(data=st.data(), content_type=content_types, reference=references)
def test_manifest_bodies(
    world: World, data: st.DataObject, content_type: str, reference: str
) -> None:
    body = data.draw(
        st.one_of(
            _mutated(world.image),
            json_values.map(lambda v: json.dumps(v).encode()),
            depths.map(lambda d: b"[" * d + b"]" * d),
            depths.map(
                lambda d: b'{"schemaVersion": 2, "layers": ' + b"[{}," * d + b"]" * d + b"}"
            ),
            st.binary(max_size=200),
        )
    )
    path = url(REPO, f"manifests/{reference}")
    send(world, "PUT", path, {"Content-Type": content_type}, body)
