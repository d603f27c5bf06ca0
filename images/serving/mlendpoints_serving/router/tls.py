"""TLS on the router's port, with the certificate reloaded when its files change.

Kubelet updates a mounted Secret by an atomic symlink swap, so the files are polled (the stat of
the resolved files: inode, size, mtime) every few seconds. A change is loaded into a fresh
SSLContext; only when that succeeds does it become current. New handshakes are switched to the
current context from the server context's SNI callback (called for every ClientHello, with or
without SNI), so the listening socket and the connections already open are untouched. A
replacement that does not load (corrupt, key not matching) is logged and counted in
`mlendpoints_router_tls_reloads_total{result="failed"}`; the previous certificate keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("mlendpoints.router")

Signature = tuple[tuple[int, int, int, int], ...]


def _signature(*paths: Path) -> Signature:
    out = []
    for path in paths:
        st = os.stat(path)  # follows the symlinks: a swap shows as another inode
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Also checks that the key matches the certificate. An encrypted key gets an empty password and
    # fails, rather than OpenSSL prompting on a terminal (which would block the event loop).
    context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    return context


class CertReloader:
    """`context` is the one to listen with; it hands each handshake the current certificate."""

    def __init__(
        self, cert_file: Path, key_file: Path, interval_s: float, registry: CollectorRegistry | None = None
    ) -> None:
        self.cert_file, self.key_file, self.interval_s = cert_file, key_file, interval_s
        self.reloads = Counter(
            "mlendpoints_router_tls_reloads",
            "Certificate reloads after the TLS files changed, by result (failed: the previous one is kept).",
            ["result"],
            registry=registry,
        )
        self._signature = _signature(cert_file, key_file)
        self.current = load_context(cert_file, key_file)  # a bad certificate at start is fatal
        self.context = load_context(cert_file, key_file)
        self.context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def check(self) -> bool:
        """Load the files if they changed; True when a new certificate is now served."""
        try:
            signature = _signature(self.cert_file, self.key_file)
        except OSError as exc:
            log.error("TLS files unreadable; keeping the previous certificate: %s", exc)
            return False
        if signature == self._signature:
            return False
        self._signature = signature  # a bad version is reported once, not every poll
        try:
            self.current = load_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            self.reloads.labels("failed").inc()
            log.error("new TLS certificate does not load; keeping the previous one: %s", exc)
            return False
        self.reloads.labels("ok").inc()
        log.info("TLS certificate reloaded", extra={"fields": {"cert": str(self.cert_file)}})
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                self.check()
