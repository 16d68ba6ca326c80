"""The h11 receive-buffer change in ``proxy.upstream.patch_h11_httpcore`` returns what h11 would.

Random interleavings of data arriving and the three ways h11 takes it out (a body's
"at most n bytes", a line, the header block) run on two buffers: one with h11's own
algorithm for ``maybe_extract_at_most`` and one with ours. Every answer and the bytes
left behind must match, and a buffer handed over must not change afterwards.
"""

from __future__ import annotations

from typing import Any

from h11._receivebuffer import ReceiveBuffer
from hypothesis import given
from hypothesis import strategies as st

from proxy.upstream import patch_h11_httpcore


def h11_extract_at_most(self: Any, count: int) -> bytearray | None:
    """h11 0.16's body, as published."""
    out = self._data[:count]
    if not out:
        return None
    return self._extract(count)  # type: ignore[no-any-return]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.binary(max_size=64).map(lambda b: b.replace(b"\n", b"x"))),
        st.tuples(st.just("add"), st.sampled_from([b"\r\n", b"\r\n\r\n", b"a: b\r\n"])),
        st.tuples(st.just("at_most"), st.integers(min_value=0, max_value=100)),
        st.tuples(st.just("line"), st.none()),
        st.tuples(st.just("lines"), st.none()),
    ),
    max_size=40,
)


def _run(buffer: ReceiveBuffer, extract: Any, op: str, arg: Any) -> Any:
    if op == "add":
        buffer += arg
        return None
    if op == "at_most":
        got = extract(buffer, arg)
        return None if got is None else bytes(got)
    if op == "line":
        got = buffer.maybe_extract_next_line()
        return None if got is None else bytes(got)
    got = buffer.maybe_extract_lines()
    return None if got is None else [bytes(line) for line in got]


@given(ops)
def test_same_answers_and_same_leftovers_as_h11(sequence: list[tuple[str, Any]]) -> None:
    theirs, ours = ReceiveBuffer(), ReceiveBuffer()
    handed: list[tuple[bytearray, bytes]] = []
    for op, arg in sequence:
        expected = _run(theirs, h11_extract_at_most, op, arg)
        if op == "at_most":
            got = patch_h11_httpcore.extract_at_most(ours, arg)
            if got is not None:
                handed.append((got, bytes(got)))
            assert (None if got is None else bytes(got)) == expected
        else:
            assert _run(ours, None, op, arg) == expected
        assert bytes(ours) == bytes(theirs)
    for buffer, snapshot in handed:
        assert bytes(buffer) == snapshot  # nothing wrote into a buffer after handing it out


def test_the_change_is_in_place() -> None:
    import proxy.upstream.client  # noqa: F401  (applies it)

    assert ReceiveBuffer.maybe_extract_at_most is patch_h11_httpcore.extract_at_most
