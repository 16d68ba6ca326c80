"""The private dockerd's containerd namespace is valid whatever name ``mkdtemp`` picked.

Before, the namespace was the temp dir's name itself, and containerd refused the names
with a ``_`` at either end of the random part or two in a row (about one run in 17),
which failed every docker test of the run.
"""

from __future__ import annotations

import re
import string
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from testkit.realclients import containerd_namespace

# containerd's namespaces/validate.go: runs of alphanumerics joined by one . _ or -.
CONTAINERD_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
# tempfile's own alphabet for the random part of mkdtemp names.
MKDTEMP_ALPHABET = string.ascii_lowercase + string.digits + "_"


def valid(namespace: str) -> bool:
    return len(namespace) <= 76 and CONTAINERD_NAMESPACE.fullmatch(namespace) is not None


@given(st.text(MKDTEMP_ALPHABET, min_size=8, max_size=8))
@example("_abcdefg")
@example("abcdefg_")
@example("abc__efg")
def test_every_mkdtemp_name_gives_a_valid_namespace(random_part: str) -> None:
    name = "gpd-" + random_part
    assert valid(containerd_namespace(name))
    assert valid(containerd_namespace(name) + "-plugins")  # the plugins namespace too


def test_names_from_mkdtemp_itself(tmp_path: Path) -> None:
    names = [Path(tempfile.mkdtemp(prefix="gpd-", dir=tmp_path)).name for _ in range(2000)]
    namespaces = {containerd_namespace(name) for name in names}
    assert all(valid(namespace) for namespace in namespaces)
    assert len(namespaces) == len(names)  # distinct dirs, distinct namespaces
