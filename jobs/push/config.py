"""The push channel's configuration: FCM settings and the service account that signs in.

The credential is google-auth's service account, which runs Google's OAuth 2.0 JWT bearer
grant (developers.google.com/identity/protocols/oauth2/service-account): an RS256 JWT signed
by the account's key, exchanged at the token endpoint for an access token it caches until
near expiry. ``TASKMASTER_GOOGLE_TOKEN_URI`` replaces the key file's ``token_uri`` through
``with_token_uri``, the library's supported override; the JWT's ``aud`` stays Google's
documented ``https://oauth2.googleapis.com/token`` (google-auth keeps it fixed so that private
token endpoints work, google-auth-library-python#784).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.oauth2 import service_account

from jobs.push.errors import PushUnavailable
from worker.errors import ConfigError
from worker.settings import Settings

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# What google-auth's service account needs from the key file to sign the grant.
_REQUIRED_FIELDS = ("client_email", "private_key")


@dataclass(frozen=True)
class FcmConfig:
    project_id: str
    credentials_file: Path
    base_url: str
    token_uri: str
    timeout_s: float

    @property
    def send_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"


def fcm_config(settings: Settings) -> FcmConfig:
    """The channel's settings, or PushUnavailable naming the first one missing."""
    if not settings.fcm_project_id:
        raise PushUnavailable("push is not configured: TASKMASTER_FCM_PROJECT_ID is not set")
    if settings.fcm_credentials_file is None:
        raise PushUnavailable("push is not configured: TASKMASTER_FCM_CREDENTIALS_FILE is not set")
    return FcmConfig(
        project_id=settings.fcm_project_id,
        credentials_file=settings.fcm_credentials_file,
        base_url=settings.fcm_base_url,
        token_uri=settings.google_token_uri,
        timeout_s=settings.provider_timeout,
    )


def load_credentials(path: Path, token_uri: str) -> service_account.Credentials:
    from google.oauth2 import service_account  # imported when used: see jobs/push/actors.py

    """The service account of ``path``, scoped for FCM, asking ``token_uri`` for tokens."""
    info = read_service_account(path)
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
    except (ValueError, KeyError) as exc:
        # The library's message names the problem (an unreadable key), never the key itself.
        raise ConfigError(
            f"TASKMASTER_FCM_CREDENTIALS_FILE: {path}: the service account key cannot be used"
            f" ({type(exc).__name__})"
        ) from exc
    redirected: service_account.Credentials = credentials.with_token_uri(token_uri)
    return redirected


def read_service_account(path: Path) -> dict[str, Any]:
    """The key file's JSON, or ConfigError saying why it is not a service account key."""
    name = "TASKMASTER_FCM_CREDENTIALS_FILE"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: {path} cannot be read ({type(exc).__name__})") from exc
    try:
        info = json.loads(text)
    except ValueError:
        # No excerpt of the file: it may hold a key.
        raise ConfigError(f"{name}: {path} is not JSON; expected a service account key file") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        kind = info.get("type") if isinstance(info, dict) else None
        raise ConfigError(
            f"{name}: {path} is not a service account key file (its type is {kind!r},"
            " expected 'service_account')"
        )
    missing = [field for field in _REQUIRED_FIELDS if not info.get(field)]
    if missing:
        raise ConfigError(f"{name}: {path} lacks {', '.join(missing)}")
    # google-auth insists on a token_uri; ours comes from TASKMASTER_GOOGLE_TOKEN_URI anyway.
    info.setdefault("token_uri", "https://oauth2.googleapis.com/token")
    return info


def check_credentials_file(settings: Settings) -> None:
    """Start-up check: a named key file must exist and hold a usable service account key."""
    if settings.fcm_credentials_file is None:
        return
    load_credentials(settings.fcm_credentials_file, settings.google_token_uri)
