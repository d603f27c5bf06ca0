"""Key auth: `Authorization: Bearer <key>` against the endpoint's primary and secondary keys."""

from __future__ import annotations

import hmac


class KeyChecker:
    """Holds the current keys; swapped whole when the Secret or keys file changes."""

    def __init__(self) -> None:
        self._keys: tuple[bytes, ...] = ()

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    def set_keys(self, *keys: str | None) -> None:
        self._keys = tuple(key.encode() for key in keys if key)

    def check(self, authorization: bytes | None) -> bool:
        """True when the header carries one of the keys. Every key is compared, each in constant time,
        so the time taken says nothing about which key or which part was close."""
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        return matched and scheme.lower() == b"bearer"
