"""Password hashes: RabbitMQ's salted SHA-256 and MD5 formats, checked in constant time.

`rabbit_password_hashing_sha256` stores base64(salt[4] + sha256(salt + password)); the
MD5 variant the same with MD5. Both come from RabbitMQ definitions exports, so migrated
users keep their passwords. New hashes use SHA-256 with a random salt.

Pure; imports the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

SALT_BYTES: Final = 4
_ALGORITHMS: Final = {"sha256": hashlib.sha256, "md5": hashlib.md5}


def hash_password(password: str, *, salt: bytes | None = None, algorithm: str = "sha256") -> str:
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    digest = _ALGORITHMS[algorithm](salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def verify_password(password: str, password_hash: str, *, algorithm: str = "sha256") -> bool:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return False
    salt, expected = raw[:SALT_BYTES], raw[SALT_BYTES:]
    actual = _ALGORITHMS[algorithm](salt + password.encode("utf-8")).digest()
    return hmac.compare_digest(actual, expected) and len(raw) > SALT_BYTES
