"""The settings sections, one frozen dataclass each, grouped by what they configure:
``listener`` (server, access, tls), ``upstream`` (upstream, gcp, routing, transport,
quotas, apis), ``cache``, ``gate`` (vulnerability_gate). ``proxy.config.groups``
puts them in the order every output shows them and builds ``Settings`` from them.
"""
