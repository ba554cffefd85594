"""Bearer JWT auth: every route declares the scope it needs; the token's tenant bounds what it sees.

Tokens carry `tenant_id` and `scopes` claims. Verification keys come from settings: a JWKS URL or a
PEM public key (RS256/ES256), or outside production an HS256 secret (what `payloop token` mints).
A token for another tenant never sees a foreign row: routes filter by `principal.tenant_id` and
answer 404 for ids they do not own.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import jwt
import structlog
from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from payloop.problems import NotFound, Problem
from payloop.settings import PlatformSettings, platform_settings

ADMIN_SCOPE = "admin"
KNOWN_SCOPES = {
    "ar:read": "Read receivables, invoices, clients and reports",
    "payments:write": "Charge, refund, manage payment methods and auto-pay",
    "collections:write": "Manage collection policies, cases and promises",
    "gl:write": "Manage accounting connections and retry postings",
    "psa:write": "Manage PSA connections and run syncs",
    "tenants:write": "Change the tenant's profile, branding and webhooks",
    "audit:read": "Read the tenant's audit log",
    ADMIN_SCOPE: "Everything within the tenant",
}

_bearer = HTTPBearer(auto_error=False, description="JWT with tenant_id and scopes claims")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    scopes: frozenset[str]
    subject: str

    def has(self, scope: str) -> bool:
        return ADMIN_SCOPE in self.scopes or scope in self.scopes

    def owns(self, tenant_id: str) -> None:
        """404 (not 403) for another tenant's resource, so ids of other tenants leak nothing."""
        if tenant_id != self.tenant_id:
            raise NotFound()


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="payloop"'})


class TokenVerifier:
    def __init__(self, settings: PlatformSettings):
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg", "")
            if self._jwks is not None and alg != "HS256":
                key = self._jwks.get_signing_key_from_jwt(token).key
                algorithms = ["RS256", "ES256", "EdDSA"]
            elif s.jwt_public_key and alg != "HS256":
                key, algorithms = s.jwt_public_key, ["RS256", "ES256", "EdDSA"]
            elif s.jwt_secret and s.env != "prod" and alg == "HS256":
                key, algorithms = s.jwt_secret, ["HS256"]
            else:
                raise _unauthorized(f"token algorithm {alg!r} is not accepted here")
            claims = jwt.decode(token, key, algorithms=algorithms, audience=s.jwt_audience,
                                issuer=s.jwt_issuer, options={"require": ["exp", "tenant_id"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        tenant_id = claims.get("tenant_id")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise _unauthorized("token has no tenant_id")
        scopes = claims.get("scopes", [])
        if isinstance(scopes, str):
            scopes = scopes.split()
        return Principal(tenant_id=tenant_id, scopes=frozenset(scopes), subject=str(claims.get("sub", "")))


@lru_cache
def _verifier() -> TokenVerifier:
    return TokenVerifier(platform_settings())


def authenticated(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing bearer token")
    return _verifier().verify(credentials.credentials)


def require(scope: str):
    """Dependency: the caller, who must hold `scope` (or `admin`)."""
    if scope not in KNOWN_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def _check(principal: Principal = Depends(authenticated)) -> Principal:
        # Bound in the request's own task (not the threadpool), so every log line of the request
        # names its tenant.
        structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id)
        if not principal.has(scope):
            raise Problem(403, "Forbidden", f"this route needs the {scope!r} scope")
        return principal

    _check.required_scope = scope  # type: ignore[attr-defined]
    return Depends(_check)


def mint_token(tenant_id: str, scopes: list[str], *, settings: PlatformSettings | None = None,
               ttl: timedelta = timedelta(hours=12), subject: str = "dev") -> str:
    """A dev/test HS256 token. Production tokens come from the identity provider."""
    s = settings or platform_settings()
    if not s.jwt_secret:
        raise RuntimeError("PAYLOOP_JWT_SECRET is not set; cannot mint a dev token")
    now = datetime.now(UTC)
    claims = {"sub": subject, "tenant_id": tenant_id, "scopes": scopes, "iss": s.jwt_issuer,
              "aud": s.jwt_audience, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, s.jwt_secret, algorithm="HS256")
