"""The TLS listener's certificate, re-read when its files change.

uvicorn is given one ``SSLContext`` for the life of the server. Its ``sni_callback``
runs for every handshake (with or without SNI) and hands the connection the current
context; at most every ``reload_interval`` it looks at the files' mtimes and, when
they changed, builds a new context from them. A renewed certificate is thus served to
new connections without a restart; a half-written pair that does not load keeps the
old one (with a warning) until the next look.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from proxy.clock import SYSTEM, Clock
from proxy.config import TlsSettings

log = logging.getLogger("gar_proxy.tls")


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class ReloadingCertificate:
    def __init__(self, settings: TlsSettings, clock: Clock = SYSTEM) -> None:
        assert settings.cert_file is not None and settings.key_file is not None
        self.cert, self.key = settings.cert_file, settings.key_file
        self.interval, self.clock = settings.reload_interval, clock
        self._stamp = self._mtimes()
        self.current = _context(self.cert, self.key)  # an error here stops start-up
        self._checked = clock.monotonic()
        # The context uvicorn listens with; each handshake is moved to ``current``.
        self.listener = _context(self.cert, self.key)
        self.listener.sni_callback = self._pick
        self.reloads = 0

    def _mtimes(self) -> tuple[int, int]:
        return (os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns)

    def _pick(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self.maybe_reload()
        connection.context = self.current

    def maybe_reload(self) -> bool:
        now = self.clock.monotonic()
        if now - self._checked < self.interval:
            return False
        self._checked = now
        try:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return False
            self.current = _context(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            log.warning("tls: keeping the current certificate: %s", error)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("tls: loaded a new certificate from %s", self.cert)
        return True
