"""API keys with roles, environment scopes, and signed stream URLs (docs/security.md).

Keys are random strings; only their SHA-256 is kept (in memory for ``SPOTON_API_KEYS``, on disk in the keys
file), compared in constant time. Roles are ordered: a ``viewer`` reads and watches, an ``operator`` also starts and
stops tasks, an ``admin`` also reads configuration. A key may be limited to some environments. With no key
configured, auth is off (the embedded demo) and every caller is an anonymous admin.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol


class Role(IntEnum):
    viewer = 1
    operator = 2
    admin = 3


class KeyConfigError(ValueError):
    """A key setting or keys file that cannot be used; the message says why."""


@dataclass(slots=True, frozen=True)
class Principal:
    name: str
    role: Role
    environments: frozenset[str] | None = None
    """None: every environment."""

    def may_see(self, environment_id: str) -> bool:
        return self.environments is None or environment_id in self.environments


ANONYMOUS = Principal("anonymous", Role.admin)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _role(value: str, where: str) -> Role:
    try:
        return Role[value.strip().lower()]
    except KeyError:
        raise KeyConfigError(f"{where}: unknown role '{value}' (viewer, operator, admin)") from None


class TokenVerifier(Protocol):
    """Bearer tokens other than API keys (``app.core.jwt_auth.JwtVerifier``); blocking."""

    def verify(self, token: str) -> Principal | None: ...


class KeyStore:
    def __init__(
        self,
        entries: dict[str, Principal],
        secret: bytes,
        url_ttl_s: float = 300.0,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._by_digest = entries
        self._secret = secret
        self.url_ttl_s = url_ttl_s
        self.tokens = tokens
        """JWTs from an identity provider, besides the API keys (None: keys only)."""

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest) or self.tokens is not None

    @classmethod
    def load(cls, inline: str, path: Path | None, secret: str | None, url_ttl_s: float = 300.0) -> KeyStore:
        entries: dict[str, Principal] = {}
        for i, item in enumerate(p for p in inline.split(",") if p.strip()):
            role, sep, key = item.strip().partition(":")
            if not sep or len(key) < 16:
                raise KeyConfigError(f"SPOTON_API_KEYS item {i + 1}: use role:KEY with a key of at least 16 characters")
            entries[digest(key)] = Principal(f"key{i + 1}", _role(role, "SPOTON_API_KEYS"))
        if path is not None:
            try:
                raw = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise KeyConfigError(f"keys file {path}: {exc}") from None
            if not isinstance(raw, list):
                raise KeyConfigError(f"keys file {path}: expected a JSON list of keys")
            for i, e in enumerate(raw):
                if not isinstance(e, dict) or not isinstance(e.get("sha256"), str) or len(e["sha256"]) != 64:
                    raise KeyConfigError(f"keys file {path}: entry {i + 1} needs name, role and a sha256 hex digest")
                envs = e.get("environments")
                if envs is not None and not (isinstance(envs, list) and all(isinstance(x, str) for x in envs)):
                    raise KeyConfigError(f"keys file {path}: entry {i + 1}: environments must be a list of ids")
                entries[e["sha256"].lower()] = Principal(
                    str(e.get("name") or f"file{i + 1}"),
                    _role(str(e.get("role", "")), f"keys file {path} entry {i + 1}"),
                    None if envs is None else frozenset(envs),
                )
        mac_key = secret.encode() if secret else secrets.token_bytes(32)
        return cls(entries, mac_key, url_ttl_s)

    async def authenticate_async(self, token: str | None) -> Principal | None:
        """``authenticate`` off the event loop when the token is a JWT (its issuer's keys may be fetched)."""
        if self.tokens is not None and token and _is_jwt(token):
            return await asyncio.to_thread(self.authenticate, token)
        return self.authenticate(token)

    def authenticate(self, token: str | None) -> Principal | None:
        """The key's principal; None for a missing or unknown key (always ANONYMOUS while auth is off)."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            return None
        if self.tokens is not None and _is_jwt(token):
            return self.tokens.verify(token)
        wanted = digest(token)
        for d, principal in self._by_digest.items():
            if hmac.compare_digest(d, wanted):
                return principal
        return None

    # -- short-lived signed URLs (for <img> tags, which cannot send headers) -------------------------
    def sign(self, path: str, principal: Principal, now: float | None = None) -> tuple[int, str]:
        exp = int((now or time.time()) + self.url_ttl_s)
        return exp, self._mac(path, exp, principal)

    def verify(self, path: str, exp: int, sig: str, principal_name: str, now: float | None = None) -> bool:
        if exp < (now or time.time()):
            return False
        expected = self._mac(path, exp, Principal(principal_name, Role.viewer))
        return hmac.compare_digest(expected, sig)

    def _mac(self, path: str, exp: int, principal: Principal) -> str:
        msg = f"{path}\n{exp}\n{principal.name}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def principal_named(self, name: str) -> Principal | None:
        return next((p for p in self._by_digest.values() if p.name == name), None)


def _is_jwt(token: str) -> bool:
    """A JWS compact token (``header.payload.signature``, base64url JSON header) rather than an API key."""
    return token.count(".") == 2 and token.startswith("ey")


def new_key() -> str:
    return secrets.token_urlsafe(32)
