"""Keyset pagination: a page of items and an opaque cursor for the next one."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Generic, TypeVar

from scheduler.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput.field("cursor", "is not a cursor this API returned") from exc


def decode_int_cursor(cursor: str) -> int:
    raw = decode_cursor(cursor)
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInput.field("cursor", "is not a cursor this API returned") from exc
