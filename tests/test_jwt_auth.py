"""OIDC/JWT bearer tokens on a real server, with keys this test makes: a JWKS served over HTTP like an identity
provider's, roles and scopes from claims, and every way a token can be wrong refused with 401 (REST) or 4401
(WebSocket)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.core.config import Settings
from app.core.jwt_auth import JwtVerifier
from app.core.security import KeyConfigError, Role
from tests.live_server import live_server
from tests.test_e2e import make_clip
from tests.ws_support import first_message_outcome as _ws

ISSUER, AUDIENCE = "https://idp.example.test/", "spoton"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(claims: dict[str, Any] | None = None, key: Any = KEY, alg: str = "RS256", kid: str = "k1", **kw: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "spoton_role": "viewer"}
    body.update(claims or {})
    for k, v in kw.items():
        if v is None:
            body.pop(k, None)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1", "use": "sig"}
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


@pytest.fixture(scope="module")
def server(jwks_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("jwt")
    clip = make_clip(tmp, 140)
    settings = Settings(
        environments_dir=tmp / "none",
        extra_environments=[clip],
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks_url=jwks_url,
        data_dir=tmp / "data",
    )
    with live_server(settings) as base:
        r = httpx.post(
            base + "/api/v1/processing-tasks/start",
            json={"environment_id": "clip"},
            headers={"Authorization": f"Bearer {token({'spoton_role': ['viewer', 'operator']})}"},
        )
        assert r.status_code == 202, r.text
        yield base, r.json()["task_id"]


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_roles_and_scopes_come_from_the_token(server: tuple[str, str]) -> None:
    base, task = server
    assert httpx.get(base + "/api/v1/processing-tasks", headers=bearer(token())).status_code == 200
    start = {"environment_id": "clip"}
    assert httpx.post(base + "/api/v1/processing-tasks/start", json=start, headers=bearer(token())).status_code == 403
    scoped = token({"spoton_environments": ["elsewhere"]})
    assert httpx.get(f"{base}/api/v1/processing-tasks/{task}/status", headers=bearer(scoped)).status_code == 403
    assert httpx.get(base + "/api/v1/config/environments", headers=bearer(scoped)).json() == []
    inside = token({"spoton_environments": ["clip"]})
    assert httpx.get(f"{base}/api/v1/processing-tasks/{task}/status", headers=bearer(inside)).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        token(key=OTHER),  # signed by someone else
        token({"iss": "https://evil.example.test/"}),
        token({"aud": "another-service"}),
        token({"exp": int(time.time()) - 3600}),
        token(exp=None),  # no expiry at all
        token({"spoton_role": "superuser"}),
        token(spoton_role=None),
        token(kid="unknown"),
        jwt.encode(  # a shared-secret algorithm: never accepted, whatever the secret
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60, "spoton_role": "admin"},
            "a-shared-secret-of-at-least-32-bytes!",
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # alg none
        "eyJ.not-a-token.at-all",
    ],
)
def test_bad_tokens_are_refused(server: tuple[str, str], bad: str) -> None:
    base, _ = server
    assert httpx.get(base + "/api/v1/processing-tasks", headers=bearer(bad)).status_code == 401


def test_websocket_first_message_takes_a_token(server: tuple[str, str]) -> None:
    base, task = server
    url = base.replace("http://", "ws://") + f"/ws/tracking/{task}"

    ok = asyncio.run(asyncio.wait_for(_ws(url, json.dumps({"type": "auth", "token": token()})), 60))
    assert ok == (None, 2)
    expired = token({"exp": int(time.time()) - 3600})
    assert asyncio.run(asyncio.wait_for(_ws(url, json.dumps({"type": "auth", "token": expired})), 30)) == (4401, 0)


def test_a_pem_key_works_like_a_jwks_and_settings_are_checked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    v = JwtVerifier(ISSUER, AUDIENCE, public_key_file=pem)
    who = v.verify(token({"spoton_role": "admin", "sub": "bob"}, key=ec_key, alg="ES256"))
    assert who is not None and who.role == Role.admin and who.name == "jwt:bob" and who.environments is None
    assert v.verify(token(key=KEY)) is None  # RSA-signed: not this issuer's key
    with pytest.raises(KeyConfigError, match="exactly one"):
        JwtVerifier(ISSUER, AUDIENCE)
    with pytest.raises(KeyConfigError, match="AUDIENCE"):
        JwtVerifier(ISSUER, "", public_key_file=pem)
