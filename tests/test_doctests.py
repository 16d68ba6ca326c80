"""The examples in module docstrings are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "proxy.clock",
    "proxy.commands.ls",
    "proxy.config_values",
    "proxy.gar.cleanup",
    "proxy.gar.policy",
    "proxy.gar.sbom",
    "proxy.gar.vulnerabilities",
    "proxy.oci.errors",
    "proxy.oci.references",
    "proxy.redact",
    "proxy.oci.digest",
    "proxy.oci.names",
    "proxy.oci.platform",
    "proxy.oci.ranges",
    "proxy.routes.observe",
    "proxy.services.mirrors",
    "proxy.services.negative",
    "proxy.upstream.calls",
    "proxy.upstream.challenge",
    "proxy.upstream.redirects",
    "testkit.realclients",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
