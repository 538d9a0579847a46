"""Issue, check and revoke the bearer tokens pipelines use on the HTTP API; only a hash of each is stored."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

import pandas as pd

from .identity import User
from .models import ApiToken, Frozen, Role, TokenScope
from .store import Store

PREFIX = "slt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@/-]{0,79}$")


class TokenRefused(PermissionError):
    """A request whose token is missing, unknown, revoked or not allowed to do this; `status` is 401 or 403."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class IssuedToken(Frozen):
    """A freshly created token: the secret is shown once and never stored."""

    token: ApiToken
    secret: str


def hash_secret(secret: str) -> str:
    """Return the sha256 hex of a token secret (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def may_manage_tokens(user: User, model: str) -> bool:
    """Tell whether a user may create or revoke tokens for a model: Platform owners only."""
    return user.holds(model, Role.PLATFORM)


def create_token(store: Store, user: User, name: str, model: str, scopes: list[TokenScope | str],
                 now: datetime) -> IssuedToken:
    """Issue a token scoped to one model and to what it may submit; return it with its secret (shown once)."""
    if not may_manage_tokens(user, model):
        raise TokenRefused(403, f"{user.email} is not a Platform owner of '{model}'; only they manage API tokens")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError("name: 1-80 letters, digits, spaces or _ . : @ / -, starting with a letter or digit")
    if not scopes:
        raise ValueError("scopes: pick at least one of " + ", ".join(s.value for s in TokenScope))
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, model=model, scopes=sorted({TokenScope(s) for s in scopes}, key=list(TokenScope).index),
                     sha256=hash_secret(secret), created_by=user.email, created_at=now)
    store.put_api_token(token, actor=user.email)
    return IssuedToken(token=token, secret=secret)


def revoke_token(store: Store, user: User, name: str, now: datetime) -> ApiToken:
    """Revoke a token by name so it no longer authenticates."""
    tokens = {t.name: t for t in store.api_tokens()}
    if name in tokens and not may_manage_tokens(user, tokens[name].model):
        raise TokenRefused(403, f"{user.email} is not a Platform owner of '{tokens[name].model}'")
    return store.revoke_api_token(name, actor=user.email, at=now)


def authenticate(store: Store, authorization: str | None, model: str | None = None,
                 scope: TokenScope | None = None) -> ApiToken:
    """Return the token an `Authorization: Bearer ...` header carries, if it may act on `model` with `scope`."""
    if not authorization:
        raise TokenRefused(401, "missing Authorization header; send 'Authorization: Bearer <token>'")
    kind, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if kind.lower() != "bearer" or not secret:
        raise TokenRefused(401, "the Authorization header must be 'Bearer <token>'")
    token = store.api_token_by_hash(hash_secret(secret))
    if token is None:
        raise TokenRefused(401, "unknown token")
    if token.revoked_at is not None:
        raise TokenRefused(401, f"token '{token.name}' was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC")
    if scope is not None and scope not in token.scopes:
        raise TokenRefused(403, f"token '{token.name}' may submit {', '.join(s.value for s in token.scopes)}, "
                                f"not {scope.value}")
    if model is not None and model != token.model:
        raise TokenRefused(403, f"token '{token.name}' is scoped to model '{token.model}', not '{model}'")
    return token


def tokens_frame(store: Store, model: str) -> pd.DataFrame:
    """Return a model's tokens for the admin table (no secrets, no hashes)."""
    rows = [{"name": t.name, "scopes": ", ".join(s.value for s in t.scopes),
             "status": "active" if t.revoked_at is None else "revoked", "created by": t.created_by,
             "created at": t.created_at, "revoked by": t.revoked_by, "revoked at": t.revoked_at}
            for t in store.api_tokens(model)]
    return pd.DataFrame(rows, columns=["name", "scopes", "status", "created by", "created at", "revoked by",
                                       "revoked at"])
