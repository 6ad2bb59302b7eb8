"""The FCM HTTP v1 client: one message to one registration token per request.

``POST {base}/v1/projects/{project}/messages:send`` with ``{"message": {...}}`` and a bearer
access token (reference/fcm/rest/v1/projects.messages/send); the answer is the Message,
whose ``name`` is ``projects/{project}/messages/{id}``. google-auth fetches and caches the
access token; requests carries the calls, each bounded by TASKMASTER_PROVIDER_TIMEOUT.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import requests
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from jobs.push.config import FcmConfig, load_credentials
from jobs.push.errors import (
    FcmAuthError,
    FcmUnreachable,
    classify,
    is_expired_access_token,
    parse_failure,
)
from jobs.push.models import PushSend


def build_message(token: str, push: PushSend) -> dict[str, Any]:
    """The send request's body for one device (reference/fcm/rest/v1/projects.messages)."""
    message: dict[str, Any] = {
        "token": token,
        "notification": {"title": push.title, "body": push.body},
    }
    data = push.message_data()
    if data:
        message["data"] = data
    if push.url is not None and push.url.startswith("https://"):
        # WebpushFcmOptions.link: opened on click; FCM requires HTTPS for it.
        message["webpush"] = {"fcm_options": {"link": push.url}}
    return {"message": message}


class FcmClient:
    """Sends messages for one project; safe to share between a process's worker threads."""

    def __init__(self, config: FcmConfig, credentials: service_account.Credentials | None = None) -> None:
        self.config = config
        self.credentials = credentials or load_credentials(config.credentials_file, config.token_uri)
        self._session = requests.Session()
        self._auth_request = functools.partial(Request(self._session), timeout=config.timeout_s)
        # One refresh at a time: threads finding the token expired together fetch it once.
        self._refresh_lock = threading.Lock()

    def send(self, body: dict[str, Any]) -> str:
        """Send one message; return its name, or raise an FcmError saying what to do next."""
        response, used_token = self._post(body)
        if response.status_code == 401:
            failure = parse_failure(401, response.content, response.headers.get("Retry-After"))
            if is_expired_access_token(failure):
                # Revoked or expired before google-auth's own margin: one fresh token, one retry.
                self._refresh(stale=used_token)
                response, _ = self._post(body)
        if response.status_code == 200:
            try:
                document = response.json()
            except ValueError:
                return ""  # accepted all the same: 200 is FCM's word that it took the message
            return str(document.get("name", "")) if isinstance(document, dict) else ""
        failure = parse_failure(response.status_code, response.content, response.headers.get("Retry-After"))
        raise classify(failure)

    def close(self) -> None:
        self._session.close()

    def _post(self, body: dict[str, Any]) -> tuple[requests.Response, str | None]:
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        with self._refresh_lock:
            self._guard_auth(
                lambda: self.credentials.before_request(
                    self._auth_request, "POST", self.config.send_url, headers
                )
            )
            used_token = self.credentials.token
        try:
            response = self._session.post(
                self.config.send_url, json=body, headers=headers, timeout=self.config.timeout_s
            )
        except requests.RequestException as exc:
            # A timeout after the request left may still have delivered it: at least once.
            raise FcmUnreachable(f"FCM did not answer: {type(exc).__name__}") from exc
        return response, used_token

    def _refresh(self, stale: str | None) -> None:
        with self._refresh_lock:
            if self.credentials.token == stale:
                self._guard_auth(lambda: self.credentials.refresh(self._auth_request))

    def _guard_auth(self, call: Callable[[], object]) -> None:
        """Run a google-auth call, translating its errors (whose text holds no token)."""
        try:
            call()
        except google_exceptions.RefreshError as exc:
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            if exc.retryable:
                raise FcmUnreachable(f"the Google token endpoint failed: {reason}") from exc
            raise FcmAuthError(f"the Google token endpoint refused the service account: {reason}") from exc
        except google_exceptions.TransportError as exc:
            raise FcmUnreachable(f"the Google token endpoint did not answer: {type(exc).__name__}") from exc


_clients: dict[FcmConfig, FcmClient] = {}
_clients_lock = threading.Lock()


def client_for(config: FcmConfig) -> FcmClient:
    """The process's client for ``config``, so its access token is shared by every job."""
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            client = _clients[config] = FcmClient(config)
        return client


def close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
