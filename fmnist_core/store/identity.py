"""Who a visitor is to the job queue when nobody signs in: a name the lab issues, signed with a key
kept in the cache folder (so every server process on that folder, and the next one after a
restart, recognises it), kept by the browser in a cookie: a reload or a second tab is the same
person, and nobody can make up another's name without the key."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from fmnist_core.base.files import write_text_atomic

log = logging.getLogger("fmnist_core")

KEY_FILE = ".identity_key"  # in the cache folder, readable by its owner only
KEY_BYTES = 32
COOKIE = "fmnist_lab_id"
PREFIX = "v1"
MAX_TOKEN = 200  # characters: anything longer is not ours, and is not read further


def signing_key(root: Path) -> bytes:
    """The lab's key for names (made on first use, atomically; a damaged key file is replaced,
    which makes everyone a new person once)."""
    path = Path(root) / KEY_FILE
    try:
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 2 * KEY_BYTES:
            return bytes.fromhex(path.read_text())
    except (OSError, ValueError):
        pass
    if path.exists() or path.is_symlink():
        log.warning("identity: the key file %s was damaged; a new one is made", path)
    Path(root).mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    write_text_atomic(path, key.hex())
    os.chmod(path, 0o600)
    return bytes.fromhex(path.read_text())  # another process may have won the race: its key counts


def _signature(key: bytes, name: str) -> str:
    return hmac.new(key, f"{PREFIX}.{name}".encode(), hashlib.sha256).hexdigest()[:32]


def issue(key: bytes) -> str:
    """A new person's token: their name and its signature."""
    name = secrets.token_hex(8)
    return f"{PREFIX}.{name}.{_signature(key, name)}"


def verify(key: bytes, token: str | None) -> str | None:
    """The person a token names, or None where it is not one this lab signed."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 16:
        return None
    if not hmac.compare_digest(parts[2].encode(), _signature(key, parts[1]).encode()):
        return None
    return parts[1]


def same_secret(given: str, expected: str) -> bool:
    """Whether `given` is `expected`, compared in constant time as bytes (any text, any length)."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())
