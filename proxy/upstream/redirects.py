"""Where an upstream redirect may be followed, and with what.

Reads follow every redirect the way a registry client does: GAR answers a blob GET
with ``302`` to a signed ``/artifacts-downloads/...`` path on its own host, another
registry may send one to a storage host. Credentials and quota go with a hop only on
the upstream's own origin (scheme, host and port of its base URL): the token is only
ever shown to the host that issued the challenge, and another host's requests are not
GAR's to count. Writes follow only a 307/308 to the upstream's own origin with a body
that can be sent again (a streamed one is spent). Errors name the host, never the path:
the path of a signed download or an upload session is its credential.

>>> same_origin("https://us-docker.pkg.dev/artifacts-downloads/x", "https://us-docker.pkg.dev")
True
>>> same_origin("http://127.0.0.1:9/v2/", "http://127.0.0.1:10/us")
False
"""

from __future__ import annotations

import httpx

from proxy.oci.errors import ErrorCode, RegistryError

MAX_REDIRECTS = 5


def origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, port


def same_origin(url: httpx.URL | str, base: str) -> bool:
    return origin(url) == origin(base)


def host_of(url: httpx.URL | str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"


def next_hop(response: httpx.Response, method: str, base: str, replayable: bool) -> httpx.URL:
    """Where to send ``method`` again after ``response`` (a redirect), or the error that
    says why not."""
    target = response.url.join(response.headers.get("location", ""))
    if method in ("GET", "HEAD"):
        return target
    if response.status_code not in (307, 308):
        why = f"with HTTP {response.status_code}, which would change the method"
    elif not same_origin(target, base):
        why = f"to another host ({host_of(target)})"
    elif not replayable:
        why = "after its streamed body was sent, which cannot be sent twice"
    else:
        return target
    message = f"upstream redirected {method} {why}; not followed"
    raise RegistryError(ErrorCode.UPSTREAM_BAD_GATEWAY, message)


def loop(method: str) -> RegistryError:
    return RegistryError(ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream redirected {method} in a loop")
