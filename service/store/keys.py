"""Client API keys: random secrets shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-cons-"
# Enough of the key for an operator to recognise it in `keys list`, far too little to guess it.
VISIBLE_CHARS = len(KEY_PREFIX) + 4


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new key: (plaintext to hand to the client once, its sha256 hex to store)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_key(plaintext)


def visible_prefix(plaintext: str) -> str:
    return plaintext[:VISIBLE_CHARS]
