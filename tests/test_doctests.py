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
    "proxy.imagefiles.dockerfile",
    "proxy.imagefiles.refs",
    "proxy.oci.errors",
    "proxy.oci.references",
    "proxy.redact",
    "proxy.oci.digest",
    "proxy.oci.names",
    "proxy.oci.platform",
    "proxy.oci.ranges",
    "proxy.routes.observe",
    "proxy.services.mirrors",
    "proxy.services.maintenance",
    "proxy.services.negative",
    "proxy.tag_policies",
    "proxy.upstream.challenge",
    "testkit.realclients",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
