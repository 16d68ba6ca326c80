from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError


@given(
    data=st.binary(min_size=1, max_size=4096),
    index=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
    split=st.integers(min_value=0),
)
def test_verifier_never_accepts_altered_data(
    data: bytes, index: int, delta: int, split: int
) -> None:
    digest = Digest.of(data)
    altered = bytearray(data)
    altered[index % len(data)] = (altered[index % len(data)] + delta) % 256
    verifier = digest.verifier()
    cut = split % (len(altered) + 1)
    verifier.update(bytes(altered[:cut]))
    verifier.update(bytes(altered[cut:]))
    with pytest.raises(RegistryError) as raised:
        verifier.verify()
    assert raised.value.code is ErrorCode.DIGEST_INVALID


@given(data=st.binary(max_size=4096), split=st.integers(min_value=0))
def test_verifier_accepts_the_same_bytes_in_any_chunking(data: bytes, split: int) -> None:
    for algorithm in ("sha256", "sha512"):
        verifier = Digest.of(data, algorithm).verifier()
        cut = split % (len(data) + 1)
        verifier.update(data[:cut])
        verifier.update(memoryview(data)[cut:])
        verifier.verify()
        assert verifier.size == len(data)


@given(st.binary(max_size=64))
def test_parse_and_str_round_trip(data: bytes) -> None:
    for algorithm in ("sha256", "sha512"):
        text = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        assert str(Digest.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "sha256:xyz",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha256",
        "",
        "sha256:" + "a" * 65,
        "sha512:" + "a" * 64,
        "../../etc/passwd",
    ],
)
def test_malformed_digests_are_digest_invalid(text: str) -> None:
    with pytest.raises(RegistryError) as raised:
        Digest.parse(text)
    assert raised.value.code is ErrorCode.DIGEST_INVALID
    assert raised.value.status == 400
