"""gar-proxy: a caching pull-through and push-through proxy for Google Artifact Registry."""

from __future__ import annotations

import importlib.metadata

try:
    VERSION = importlib.metadata.version("gar-proxy")
except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
    VERSION = "0+unknown"

USER_AGENT = f"gar-proxy/{VERSION}"
