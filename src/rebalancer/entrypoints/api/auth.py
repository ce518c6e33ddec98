"""Authentication (API keys, JWT bearer tokens) and scope checks.

Credentials
-----------
``X-API-Key: <key>``
    Keys from settings (``REBALANCER_API_KEYS``) and keys stored in the ``api_keys`` table. Both
    are compared by SHA-256 hash with :func:`hmac.compare_digest`; the plain key is never stored
    or logged.
``Authorization: Bearer <JWT>``
    Signed with ``settings.jwt_secret`` (``settings.jwt_algorithm``, HS256 by default); claims
    ``sub`` (who), ``tenant``, ``scopes`` (list or space-separated string) and ``exp`` are
    required.

Scopes
------
``read`` for every ``GET`` and ``POST /v1/analyze``; ``admin`` to create or update instruments,
models and accounts; ``trade`` to trigger rebalances, cancel orders and acknowledge alerts;
``approve`` to approve recommendations. A scope does not imply another.

Missing or invalid credentials: 401. Valid credentials without the scope: 403.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jwt
import sqlalchemy as sa
import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from rebalancer.config import Scope, Settings
from rebalancer.entrypoints.api.errors import ApiError
from rebalancer.entrypoints.api.store import find_api_key, hash_api_key

log = structlog.get_logger(__name__)

_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="rebalancer", ApiKey header="X-API-Key"'}

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (tenant and scopes attached)."
)
bearer_scheme = HTTPBearer(
    auto_error=False, description="JWT (HS256) with claims sub, tenant, scopes, exp."
)


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes
    ----------
    subject
        Audit name: ``api-key:<name>#<hash prefix>`` or the JWT ``sub``.
    tenant_id
        Every query of the request is scoped to this tenant.
    scopes
        What the caller may do.
    method
        ``api_key`` or ``jwt``.
    """

    subject: str
    tenant_id: str
    scopes: frozenset[Scope]
    method: Literal["api_key", "jwt"]


def _unauthorized(detail: str, field: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, [field], headers=_WWW_AUTH)


def _parse_scopes(raw: Any) -> frozenset[Scope]:
    items: Iterable[Any]
    if isinstance(raw, str):
        items = raw.split()
    elif isinstance(raw, list | tuple):
        items = raw
    else:
        return frozenset()
    known = {s.value for s in Scope}
    return frozenset(Scope(str(v)) for v in items if str(v) in known)


class Authenticator:
    """Resolves credentials to a :class:`Principal`.

    Parameters
    ----------
    settings
        API keys and JWT configuration.
    engine
        Database holding the ``api_keys`` table.
    """

    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self._keys = [(hash_api_key(s.key.get_secret_value()), s) for s in settings.api_keys]
        self._jwt_secret = settings.jwt_secret
        self._jwt_algorithm = settings.jwt_algorithm
        self._engine = engine

    def from_api_key(self, key: str) -> Principal:
        """Principal of an API key.

        Raises
        ------
        ApiError
            401 when no settings or stored key matches.
        """
        digest = hash_api_key(key)
        match = None
        for key_hash, spec in self._keys:  # no early exit: constant time over the key list
            if hmac.compare_digest(key_hash, digest):
                match = spec
        if match is not None:
            return Principal(
                f"api-key:{match.name}#{digest[:8]}",
                match.tenant,
                frozenset(match.scopes),
                "api_key",
            )
        with self._engine.connect() as conn:
            stored = find_api_key(conn, digest)
        if stored is not None and hmac.compare_digest(stored.key_hash, digest):
            return Principal(
                f"api-key:{stored.name}#{digest[:8]}", stored.tenant_id, stored.scopes, "api_key"
            )
        raise _unauthorized("unknown or revoked API key", "header.X-API-Key")

    def from_jwt(self, token: str) -> Principal:
        """Principal of a bearer token.

        Raises
        ------
        ApiError
            401 when JWT is disabled, or the token is expired, badly signed or lacks a claim.
        """
        if self._jwt_secret is None:
            raise _unauthorized(
                "bearer tokens are not enabled on this server; use X-API-Key",
                "header.Authorization",
            )
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret.get_secret_value(),
                algorithms=[self._jwt_algorithm],
                options={"require": ["exp", "sub", "tenant"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the bearer token has expired", "header.Authorization") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(
                f"invalid bearer token: {type(exc).__name__}", "header.Authorization"
            ) from None
        tenant, sub = claims.get("tenant"), claims.get("sub")
        if not isinstance(tenant, str) or not tenant or not isinstance(sub, str) or not sub:
            raise _unauthorized(
                "the bearer token needs string claims sub and tenant", "header.Authorization"
            )
        return Principal(sub, tenant, _parse_scopes(claims.get("scopes")), "jwt")

    def authenticate(
        self, api_key: str | None, bearer: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """Principal from whichever credential is present (the API key wins if both are)."""
        if api_key:
            return self.from_api_key(api_key)
        if bearer is not None and bearer.credentials:
            return self.from_jwt(bearer.credentials)
        raise _unauthorized(
            "credentials required: send X-API-Key or Authorization: Bearer <JWT>",
            "header.X-API-Key",
        )


def issue_token(
    settings: Settings,
    subject: str,
    tenant: str,
    scopes: Iterable[Scope],
    ttl_seconds: int = 3600,
) -> str:
    """A signed JWT for ``subject`` (for tests, the CLI and service-to-service calls)."""
    if settings.jwt_secret is None:
        raise ValueError("settings.jwt_secret is not set")
    now = int(time.time())
    claims = {
        "sub": subject,
        "tenant": tenant,
        "scopes": sorted(str(s) for s in scopes),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), settings.jwt_algorithm)


def require(scope: Scope) -> Callable[..., Principal]:
    """A FastAPI dependency that authenticates the caller and checks ``scope``."""

    def dependency(
        request: Request,
        api_key: Annotated[str | None, Security(api_key_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    ) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        try:
            principal = authenticator.authenticate(api_key, bearer)
        except ApiError as exc:
            log.info("auth.rejected", reason=exc.detail, route=request.scope.get("path"))
            raise
        request.state.principal = principal  # for the access log line
        if scope not in principal.scopes:
            log.info(
                "auth.forbidden",
                needed=str(scope),
                tenant=principal.tenant_id,
                subject=principal.subject,
            )
            raise ApiError(
                403,
                "forbidden",
                f"this operation needs the {scope.value!r} scope; the credentials have "
                f"{sorted(s.value for s in principal.scopes) or 'none'}",
            )
        return principal

    dependency.__name__ = f"require_{scope.value}"
    return dependency


ReadPrincipal = Annotated[Principal, Depends(require(Scope.READ))]
AdminPrincipal = Annotated[Principal, Depends(require(Scope.ADMIN))]
TradePrincipal = Annotated[Principal, Depends(require(Scope.TRADE))]
ApprovePrincipal = Annotated[Principal, Depends(require(Scope.APPROVE))]
