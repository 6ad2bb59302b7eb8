"""Secrets at rest (OAuth tokens, webhook signing secrets): Fernet from `cryptography`.

The key is TASKMASTER_SECRET_KEY, or with it unset a key generated once into
``<data dir>/secret.key`` (mode 0600), which suits the embedded single-machine defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from worker.errors import ConfigError, TaskmasterError
from worker.settings import Settings


class DecryptionError(TaskmasterError):
    """A stored secret could not be decrypted with the configured key (was the key changed?)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ConfigError(f"TASKMASTER_SECRET_KEY: not a Fernet key ({exc})") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().strip().encode())
        return cls(_key_file(settings.data_dir / "secret.key"))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise DecryptionError("a stored secret does not decrypt with the configured key") from None


def _key_file(path: Path) -> bytes:
    """Read the key, or create it atomically with mode 0600 if no process has yet."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key
