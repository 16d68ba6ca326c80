"""Shared harness for the tests and the benchmark: real servers on loopback, no mocks.

- ``fakes/``: a fake Google Artifact Registry (``fakes.gar.FakeGAR``, with injectable
  faults) and fake Google OAuth / GCE metadata servers (``fakes.google``).
- ``images``: builds OCI images, indexes and artifacts in memory and pushes them.
- ``proxyharness``: runs the proxy app in-process under uvicorn (``run_proxy``).
- ``proxyprocess``: runs ``gar-proxy`` as a subprocess (``ProxyProcess``, ``run_cli``).
- ``realclients``: private instances of real clients and registries (dockerd, podman,
  skopeo, the CNCF distribution registry).
- ``servers``: threaded uvicorn servers on 127.0.0.1 port 0 (``serve_in_thread``).

``tests/`` and ``bench/`` both import from here; nothing here imports from either.
"""
