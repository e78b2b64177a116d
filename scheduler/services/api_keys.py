"""API keys: random bearer tokens, shown once, stored as SHA-256 hashes.

A key reads ``gpk_<prefix>_<secret>``. The prefix is stored in clear to find the row; the
whole token is hashed. Keys are 256-bit random, so a fast hash is enough (no password
stretching is needed for secrets that cannot be guessed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from scheduler.domain import Principal, Role
from scheduler.errors import Forbidden, GpupoolError, NotFound, Unauthorized
from scheduler.pagination import Page, decode_int_cursor, encode_cursor
from scheduler.services import audit
from scheduler.services.tenants import get as get_tenant
from scheduler.tables import ApiKeyRow, TenantRow

TOKEN_PREFIX = "gpk_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKeyRow
    token: str


def issue(
    session: Session, who: Principal, now: datetime, tenant: str, *, name: str = ""
) -> IssuedKey:
    get_tenant(session, tenant)
    prefix = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKeyRow(
        tenant=tenant, name=name, prefix=prefix, secret_hash=_hash(token), created_at=now
    )
    session.add(row)
    session.flush()
    audit.record(
        session, who, now, "api_key.issue", "api_key", str(row.id), None, audit.as_dict(row)
    )
    return IssuedKey(row, token)


def list_page(session: Session, tenant: str, *, limit: int, cursor: str | None) -> Page[ApiKeyRow]:
    get_tenant(session, tenant)
    stmt = (
        select(ApiKeyRow)
        .where(ApiKeyRow.tenant == tenant)
        .order_by(col(ApiKeyRow.id))
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.where(col(ApiKeyRow.id) > decode_int_cursor(cursor))
    rows = list(session.exec(stmt))
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)


def revoke(session: Session, who: Principal, now: datetime, tenant: str, key_id: int) -> ApiKeyRow:
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.tenant != tenant:
        raise NotFound(f"API key {key_id} of tenant {tenant!r} does not exist")
    if row.revoked_at is None:
        before = audit.as_dict(row)
        row.revoked_at = now
        session.add(row)
        session.flush()
        audit.record(
            session, who, now, "api_key.revoke", "api_key", str(key_id), before, audit.as_dict(row)
        )
    return row


def authenticate(conn: Connection, token: str) -> Principal:
    """The tenant a key belongs to; :class:`Unauthorized` for unknown or revoked keys.

    Every tenant request starts here, so the lookup is one statement, built once, on a bare
    connection (see :func:`scheduler.db.read_once`)."""
    prefix = _prefix(token)
    found = conn.execute(_BY_PREFIX, {"prefix": prefix}).first() if prefix else None
    return _principal(token, found)


def authenticate_many(
    conn: Connection, tokens: Iterable[str]
) -> dict[str, Principal | GpupoolError]:
    """:func:`authenticate` for several tokens in one statement: each token's principal, or
    the error it would have raised."""
    tokens = set(tokens)
    prefixes = {p for p in map(_prefix, tokens) if p}
    rows = conn.execute(_BY_PREFIXES, {"prefixes": sorted(prefixes)}).all() if prefixes else []
    by_prefix = {row[0]: row[1:] for row in rows}
    out: dict[str, Principal | GpupoolError] = {}
    for token in tokens:
        try:
            out[token] = _principal(token, by_prefix.get(_prefix(token)))
        except GpupoolError as exc:
            out[token] = exc
    return out


def _prefix(token: str) -> str:
    """The stored prefix of a well-formed token, else ''."""
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return ""
    return token[len(TOKEN_PREFIX) :].split("_", 1)[0]


def _principal(token: str, found: Sequence[Any] | None) -> Principal:
    if found is None:
        raise Unauthorized("unknown API key")
    key_id, tenant, secret_hash, revoked_at, active = found
    if not hmac.compare_digest(secret_hash, _hash(token)):
        raise Unauthorized("unknown API key")
    if revoked_at is not None:
        raise Unauthorized("this API key was revoked")
    if not active:
        raise Forbidden(f"tenant {tenant!r} is deactivated")
    return Principal(Role.TENANT, tenant=tenant, key_id=key_id)


_key = ApiKeyRow.__table__  # type: ignore[attr-defined]
_tenant = TenantRow.__table__  # type: ignore[attr-defined]
_KEY_FACTS = (_key.c.id, _key.c.tenant, _key.c.secret_hash, _key.c.revoked_at, _tenant.c.active)
_BY_PREFIX = (
    sa_select(*_KEY_FACTS)
    .join(_tenant, _tenant.c.name == _key.c.tenant)
    .where(_key.c.prefix == bindparam("prefix"))
)
_BY_PREFIXES = (
    sa_select(_key.c.prefix, *_KEY_FACTS)
    .join(_tenant, _tenant.c.name == _key.c.tenant)
    .where(_key.c.prefix.in_(bindparam("prefixes", expanding=True)))
)
