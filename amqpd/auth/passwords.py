"""Password hashes: argon2id for new ones, and RabbitMQ's salted SHA-256, SHA-512 and MD5
formats for users migrated from RabbitMQ; every check is constant-time.

`rabbit_password_hashing_sha256` stores base64(salt[4] + sha256(salt + password)); the
SHA-512 and MD5 variants the same with their digest. They come from RabbitMQ definitions
exports, so migrated users keep their passwords. `amqpd hash-password` makes argon2id
hashes (argon2-cffi's RFC 9106 low-memory profile), which carry their own parameters.

Imports the standard library, argon2 and amqpd.config.model only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

import argon2
import argon2.exceptions

from amqpd.config.model import RABBIT_SALT_BYTES, hash_algorithm

SALT_BYTES: Final = RABBIT_SALT_BYTES
_DIGESTS: Final = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
# Short names accepted by `amqpd hash-password --algorithm`.
ALGORITHM_NAMES: Final = {
    "argon2": "argon2",
    "sha256": "rabbit_password_hashing_sha256",
    "sha512": "rabbit_password_hashing_sha512",
    "md5": "rabbit_password_hashing_md5",
}
_ARGON2: Final = argon2.PasswordHasher()


def hash_password(password: str, *, algorithm: str = "argon2", salt: bytes | None = None) -> str:
    """A hash of `password` in one of the config's formats (long or short name)."""
    algorithm = ALGORITHM_NAMES.get(algorithm, algorithm)
    if algorithm == "argon2":
        return _ARGON2.hash(password)
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    digest = _DIGESTS[algorithm](salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def verify_password(password: str, password_hash: str, algorithm: str | None = None) -> bool:
    """Whether `password` matches (`algorithm`: a config's hashing_algorithm, None to
    tell it from the hash); a malformed or empty hash matches nothing."""
    if not password_hash:
        return False
    algorithm = hash_algorithm(password_hash, algorithm)
    if algorithm == "argon2":
        try:
            return _ARGON2.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return False
    salt, expected = raw[:SALT_BYTES], raw[SALT_BYTES:]
    actual = _DIGESTS[algorithm](salt + password.encode("utf-8")).digest()
    return hmac.compare_digest(actual, expected) and len(raw) > SALT_BYTES
