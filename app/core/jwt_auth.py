"""OIDC / JWT bearer tokens, verified against a configured issuer's public keys (docs/security.md).

A token is accepted when its signature verifies with one of the issuer's keys (a JWKS URL, fetched and cached by
PyJWT, or a PEM file), its ``iss`` and ``aud`` are the configured ones, it has not expired (``exp`` is required),
and it names a role in ``role_claim``. Only asymmetric algorithms are accepted (a token cannot choose ``none`` or a
shared-secret algorithm). ``environments_claim``, when present, scopes the token like a scoped API key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from app.core.security import KeyConfigError, Principal, Role

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


@dataclass
class JwtVerifier:
    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key_file: Path | None = None
    role_claim: str = "spoton_role"
    environments_claim: str = "spoton_environments"
    leeway_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise KeyConfigError("JWT auth needs SPOTON_JWT_ISSUER and SPOTON_JWT_AUDIENCE")
        if bool(self.jwks_url) == bool(self.public_key_file):
            raise KeyConfigError("JWT auth needs exactly one of SPOTON_JWT_JWKS_URL and SPOTON_JWT_PUBLIC_KEY_FILE")
        self._key: Any = None
        self._jwks: jwt.PyJWKClient | None = None
        if self.public_key_file is not None:
            try:
                self._key = Path(self.public_key_file).read_bytes()
            except OSError as exc:
                raise KeyConfigError(f"SPOTON_JWT_PUBLIC_KEY_FILE: {exc}") from None
        else:
            self._jwks = jwt.PyJWKClient(str(self.jwks_url), cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Principal | None:
        """The token's principal, or None when it is not valid here (blocking: a JWKS fetch may happen)."""
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks is not None else self._key
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            log.info("JWT refused: %s", exc)
            return None
        role = _highest_role(claims.get(self.role_claim))
        if role is None:
            log.info("JWT refused: no known role in claim %r", self.role_claim)
            return None
        envs = claims.get(self.environments_claim)
        scope = frozenset(str(e) for e in envs) if isinstance(envs, list) else None
        return Principal(f"jwt:{claims['sub']}", role, scope)


def _highest_role(value: object) -> Role | None:
    names = value if isinstance(value, list) else [value]
    roles = [Role[n.lower()] for n in names if isinstance(n, str) and n.lower() in Role.__members__]
    return max(roles) if roles else None
