"""``upload_flow.gated``: a final write's last byte waits for the digest check.

With the body's length known, pieces pass on uncopied (the same objects) and only the
piece holding the last byte is split; without it each piece is held back a byte. Either
way the last byte comes only after ``check()`` passed, and never when it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.services.upload_flow import gated

PIECES = [b"abc", b"", b"defgh", b"i", b"jklmnop"]
BODY = b"".join(PIECES)


async def _source(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


class Check:
    """Records how many bytes had been yielded when it ran; raises when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: int | None = None
        self.yielded = 0

    async def __call__(self) -> None:
        self.seen = self.yielded
        if self.fail:
            raise RuntimeError("digest does not match")


async def _run(pieces: list[bytes], total: int | None, check: Check) -> list[bytes]:
    out: list[bytes] = []
    async for piece in gated(_source(pieces), check, total):
        out.append(piece)
        check.yielded += len(piece)
    return out


@pytest.mark.parametrize("total", [len(BODY), None])
async def test_every_byte_comes_and_the_last_only_after_the_check(total: int | None) -> None:
    check = Check()
    out = await _run(PIECES, total, check)
    assert b"".join(out) == BODY
    assert check.seen == len(BODY) - 1  # everything but the last byte was on its way
    assert out[-1] == BODY[-1:]


@pytest.mark.parametrize("total", [len(BODY), None])
async def test_a_failed_check_keeps_the_last_byte_back(total: int | None) -> None:
    check = Check(fail=True)
    with pytest.raises(RuntimeError):
        await _run(PIECES, total, check)
    assert check.seen == len(BODY) - 1 and check.yielded == len(BODY) - 1


async def test_with_the_length_known_pieces_pass_on_uncopied() -> None:
    pieces = [bytes([n]) * 1000 for n in range(5)]
    out = await _run(pieces, 5000, Check())
    assert all(a is b for a, b in zip(out[:4], pieces[:4], strict=True))  # the same objects
    assert out[4:] == [pieces[4][:999], pieces[4][999:]]


@pytest.mark.parametrize(
    "pieces",
    [[b"x"], [b"xy"], [b"x", b"y"], [b"", b"xyz", b""], [b"ab", b"c"]],
)
async def test_the_last_byte_at_any_place_in_its_piece(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    check = Check()
    out = await _run(pieces, len(body), check)
    assert b"".join(out) == body and check.seen == len(body) - 1 and out[-1] == body[-1:]


async def test_a_body_shorter_than_announced_is_never_checked() -> None:
    check = Check()
    out = await _run([b"abc"], 10, check)
    assert b"".join(out) == b"abc" and check.seen is None  # the writer refuses it short
