"""Everything that speaks HTTP to upstream (GAR, another registry, Google's APIs), and
the one place httpx, h11 and httpcore are imported (``tests/test_import_graph.py``).

Services call ``registry.RegistryClient`` (typed registry operations),
``google_api.GoogleApi`` (Google's REST JSON) and ``storage.StorageBucket`` (Cloud
Storage); under them ``client.Upstream`` holds the transport policy (pool, auth,
retries, quotas) and ``errors`` turns every answer and transport failure into a
``RegistryError``, once. ``lean/`` is the blob body path under httpx (GET bodies in,
upload bodies out).
"""
