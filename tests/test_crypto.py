"""Secrets at rest round-trip, with a configured key or a generated key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from worker.crypto import DecryptionError, SecretBox
from worker.errors import ConfigError
from worker.settings import load_settings


def test_generated_key_file_is_private_and_stable(tmp_path: Path) -> None:
    """Without TASKMASTER_SECRET_KEY a key is made once, mode 0600, and reused."""
    settings = load_settings({"TASKMASTER_DATA_DIR": str(tmp_path)})
    token = SecretBox.from_settings(settings).encrypt("refresh-token")
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert SecretBox.from_settings(settings).decrypt(token) == "refresh-token"


def test_configured_key_and_wrong_key(tmp_path: Path) -> None:
    """A configured key is used; another key cannot read what it wrote; a bad key is a config error."""
    key = Fernet.generate_key().decode()
    box = SecretBox.from_settings(load_settings({"TASKMASTER_SECRET_KEY": key}))
    token = box.encrypt("s3cret")
    assert b"s3cret" not in token
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(DecryptionError):
        other.decrypt(token)
    with pytest.raises(ConfigError, match="TASKMASTER_SECRET_KEY"):
        SecretBox.from_settings(load_settings({"TASKMASTER_SECRET_KEY": "short"}))
