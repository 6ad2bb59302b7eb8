"""Local stand-ins for Google's OAuth 2.0 token endpoint and FCM HTTP v1, on loopback ports.

Both speak the documented protocols, so the real google-auth and requests talk to them:

- Token endpoint (developers.google.com/identity/protocols/oauth2/service-account,
  "Making the access token request"): a form POST with
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion``, a JWT signed
  RS256 by the service account's key whose claims are ``iss`` (the account's email),
  ``scope``, ``aud`` (always ``https://oauth2.googleapis.com/token``), ``iat`` and ``exp`` (at
  most an hour apart). Success: ``{"access_token", "expires_in", "token_type": "Bearer"}``;
  failure: 400 ``{"error": "invalid_grant", "error_description": ...}``.
- FCM (firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send and
  /docs/cloud-messaging/error-codes): ``POST /v1/projects/{project}/messages:send`` with a
  bearer token carrying the firebase.messaging (or cloud-platform) scope; success is the
  Message, ``{"name": "projects/{project}/messages/{id}"}``; errors are Google API error
  bodies whose ``details`` hold ``{"@type": ".../google.firebase.fcm.v1.FcmError",
  "errorCode": ...}``, with the HTTP status of each code on the ErrorCode reference page.

Both run on the shared FakeHTTPServer (tests/fakes/http.py), so ``fail_next`` and
``drop_next`` work on them as on the other providers' fakes.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.http import FakeHTTPServer, Reply, Request

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# "aud ... When making an access token request this value is always
# https://oauth2.googleapis.com/token" (Google's service-account guide, required claims),
# whichever URL the request goes to (google-auth-library-python#784, private endpoints).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_SCOPES = (
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
)
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


# ---------------------------------------------------------------------------- service accounts


@functools.cache
def _private_key() -> rsa.RSAPrivateKey:
    # One key per test process: generating RSA keys is the slow part, and tests only need
    # the fake to hold the matching public key.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class ServiceAccount:
    path: Path
    project_id: str
    client_email: str
    private_key_id: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return _private_key().public_key()


def make_service_account(
    directory: Path, project_id: str = "taskmaster-test", signing_key: rsa.RSAPrivateKey | None = None
) -> ServiceAccount:
    """Write a service account key file as the Google Cloud console downloads it.

    Its ``token_uri`` is a closed loopback port: only TASKMASTER_GOOGLE_TOKEN_URI can make a
    token request reach a server, so a test passing proves the override took effect.
    ``signing_key`` puts another key in the file than the one the fake endpoint verifies with.
    """
    pem = (signing_key or _private_key()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    account = ServiceAccount(
        path=directory / "service-account.json",
        project_id=project_id,
        client_email=f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com",
        private_key_id=secrets.token_hex(20),
    )
    directory.mkdir(parents=True, exist_ok=True)
    account.path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project_id,
                "private_key_id": account.private_key_id,
                "private_key": pem.decode(),
                "client_email": account.client_email,
                "client_id": "109876543210987654321",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": "http://127.0.0.1:9/token",
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "universe_domain": "googleapis.com",
            }
        )
    )
    return account


Answer = tuple[int, dict[str, Any], dict[str, str]]


def _reply(answer: Answer) -> Reply:
    status, payload, headers = answer
    return Reply.json(status, payload, {"Content-Type": "application/json; charset=UTF-8", **headers})


# ---------------------------------------------------------------------------- token endpoint


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _oauth_error(error: str, description: str) -> Answer:
    return 400, {"error": error, "error_description": description}, {}


@dataclass
class Grant:
    client_email: str
    scopes: tuple[str, ...]
    expires_at: float  # time.time() seconds


class FakeGoogleOAuth(FakeHTTPServer):
    """Google's token endpoint for the service accounts it knows; verifies each assertion."""

    def __init__(self, *accounts: ServiceAccount, expires_in_s: int = 3599) -> None:
        super().__init__()
        self.accounts = {account.client_email: account for account in accounts}
        self.expires_in_s = expires_in_s
        self.grants: dict[str, Grant] = {}
        self.refusals: list[str] = []
        self._grants_lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def grant_count(self) -> int:
        with self._grants_lock:
            return len(self.grants)

    def grant_for(self, access_token: str) -> Grant | None:
        with self._grants_lock:
            return self.grants.get(access_token)

    def revoke_all(self) -> None:
        """As if the tokens were revoked: FCM answers 401 UNAUTHENTICATED to them from now on."""
        with self._grants_lock:
            for grant in self.grants.values():
                grant.expires_at = 0.0

    def handle(self, request: Request) -> Reply:
        return _reply(self._answer(request))

    def _answer(self, request: Request) -> Answer:
        if request.method != "POST" or request.path != "/token":
            return 404, {"error": "not_found"}, {}
        if not (request.header("content-type") or "").startswith("application/x-www-form-urlencoded"):
            return _oauth_error("invalid_request", "Bad Request")
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        problem, claims = self._verify(form.get("assertion", ""))
        if problem:
            with self._grants_lock:
                self.refusals.append(problem)
            return _oauth_error("invalid_grant", problem)
        scopes = tuple(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        access_token = f"ya29.c.fake-{secrets.token_urlsafe(24)}"
        with self._grants_lock:
            self.grants[access_token] = Grant(claims["iss"], scopes, time.time() + self.expires_in_s)
        return (
            200,
            {"access_token": access_token, "expires_in": self.expires_in_s, "token_type": "Bearer"},
            {},
        )

    def _verify(self, assertion: str) -> tuple[str, dict[str, Any]]:
        """Check the JWT as Google does; return (the refusal's description, claims)."""
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64decode(header_b64))
            claims = json.loads(_b64decode(claims_b64))
            signature = _b64decode(signature_b64)
        except ValueError:
            return "Invalid JWT: could not be parsed.", {}
        account = self.accounts.get(str(claims.get("iss")))
        if header.get("alg") != "RS256" or account is None:
            return "Invalid grant: account not found", {}
        if header.get("kid") not in (None, account.private_key_id):
            return "Invalid JWT Signature.", {}
        try:
            account.public_key.verify(
                signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid JWT Signature.", {}
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "Invalid JWT: Failed audience check.", {}
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > 3600
            or iat > now + 300
            or exp < now
        ):
            return (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable"
                " timeframe. Check your iat and exp values in the JWT claim.",
                {},
            )
        return "", claims


# ---------------------------------------------------------------------------- FCM


def _google_error(http: int, status: str, message: str, error_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if error_code is not None:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": error_code}]
    return {"error": error}


# Each FCM errorCode with the HTTP status and canonical status FCM answers it with.
ERRORS: dict[str, tuple[int, str, str]] = {
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
# A token's name picks its standing answer, e.g. "unregistered-phone" gets 404 UNREGISTERED.
PREFIXES = {
    "unregistered-": "UNREGISTERED",
    "invalid-": "INVALID_ARGUMENT",
    "mismatch-": "SENDER_ID_MISMATCH",
    "thirdparty-": "THIRD_PARTY_AUTH_ERROR",
    "unavailable-": "UNAVAILABLE",
    "internal-": "INTERNAL",
    "quota-": "QUOTA_EXCEEDED",
}


@dataclass(frozen=True)
class Outcome:
    """A scripted answer: "OK" or an errorCode of ERRORS, with Retry-After if given."""

    code: str = "OK"
    retry_after: str | None = None


@dataclass(frozen=True)
class Received:
    token: str | None
    message: dict[str, Any]
    bearer: str | None
    status: int


class FakeFcm(FakeHTTPServer):
    """FCM HTTP v1 for one project, accepting the access tokens ``oauth`` issued."""

    def __init__(self, oauth: FakeGoogleOAuth, project_id: str = "taskmaster-test") -> None:
        super().__init__()
        self.oauth = oauth
        self.project_id = project_id
        self.sends: list[Received] = []
        self._scripts: dict[str, deque[Outcome]] = defaultdict(deque)
        self._sends_lock = threading.Lock()

    def script(self, token: str, *outcomes: Outcome | str) -> None:
        """Answer the next requests for ``token`` so, in order; then its standing answer."""
        with self._sends_lock:
            self._scripts[token].extend(o if isinstance(o, Outcome) else Outcome(o) for o in outcomes)

    def delivered(self, token: str | None = None) -> list[Received]:
        with self._sends_lock:
            return [r for r in self.sends if r.status == 200 and (token is None or r.token == token)]

    def requests_for(self, token: str) -> list[Received]:
        with self._sends_lock:
            return [r for r in self.sends if r.token == token]

    def handle(self, request: Request) -> Reply:
        bearer = _bearer(request.header("authorization"))
        try:
            document = json.loads(request.body)
        except ValueError:
            document = None
        message = document.get("message") if isinstance(document, dict) else None
        message = message if isinstance(message, dict) else {}
        token = message.get("token") if isinstance(message.get("token"), str) else None
        answer = self._answer(request, bearer, document, message, token)
        with self._sends_lock:
            self.sends.append(Received(token, message, bearer, answer[0]))
        return _reply(answer)

    def _answer(
        self, request: Request, bearer: str | None, document: Any, message: dict[str, Any], token: str | None
    ) -> Answer:
        path = request.path
        if request.method != "POST":
            return 404, _google_error(404, "NOT_FOUND", "Requested entity was not found."), {}
        project = path.removeprefix("/v1/projects/").removesuffix("/messages:send")
        if not path.startswith("/v1/projects/") or not path.endswith("/messages:send") or "/" in project:
            return 404, _google_error(404, "NOT_FOUND", "Requested entity was not found."), {}
        grant = self.oauth.grant_for(bearer) if bearer else None
        if grant is None or grant.expires_at <= time.time():
            return (
                401,
                _google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token,"
                    " login cookie or other valid authentication credential.",
                ),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        if not set(grant.scopes) & set(FCM_SCOPES):
            return (
                403,
                _google_error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."),
                {},
            )
        if project != self.project_id:
            return (
                403,
                _google_error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'cloudmessaging.messages.create' denied on resource"
                    f" '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).",
                ),
                {},
            )
        invalid = _shape_problem(document, message, token)
        if invalid is not None:
            return 400, invalid, {}
        assert token is not None
        outcome = self._next_outcome(token)
        if outcome.code == "OK":
            return (
                200,
                {"name": f"projects/{self.project_id}/messages/0:{time.time_ns()}%{secrets.token_hex(8)}"},
                {},
            )
        http, status, text = ERRORS[outcome.code]
        extra = {"Retry-After": outcome.retry_after} if outcome.retry_after is not None else {}
        return http, _google_error(http, status, text, outcome.code), extra

    def _next_outcome(self, token: str) -> Outcome:
        with self._sends_lock:
            script = self._scripts.get(token)
            if script:
                return script.popleft()
        for prefix, code in PREFIXES.items():
            if token.startswith(prefix):
                return Outcome(code)
        return Outcome("OK")


def _bearer(value: str | None) -> str | None:
    scheme, _, credentials = (value or "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _shape_problem(document: Any, message: dict[str, Any], token: str | None) -> dict[str, Any] | None:
    """The 400 FCM gives a malformed request (error-codes page, examples 1 and 2)."""
    if not isinstance(document, dict) or not isinstance(document.get("message"), dict):
        return _bad_request("message", "Required field 'message' is missing.")
    if token is None or not token:
        return _bad_request("message", "Recipient of the message is not set.", fcm=True)
    data = message.get("data", {})
    if not isinstance(data, dict):
        return _bad_request(
            "message.data", "Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Struct)"
        )
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            text = f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {json.dumps(value)}"
            return _bad_request(f"message.data[{index}].value", text)
        if key == "from" or key.startswith(("google", "gcm")):
            return _bad_request(f"message.data[{index}].key", f"Invalid data key: {key}", fcm=True)
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or not all(isinstance(v, str) for v in notification.values()):
        return _bad_request("message.notification", "Invalid value at 'message.notification'")
    return None


def _bad_request(field_name: str, text: str, fcm: bool = False) -> dict[str, Any]:
    body = _google_error(400, "INVALID_ARGUMENT", text, "INVALID_ARGUMENT" if fcm else None)
    body["error"].setdefault("details", []).append(
        {"@type": BAD_REQUEST, "fieldViolations": [{"field": field_name, "description": text}]}
    )
    return body


@contextmanager
def running(
    account: ServiceAccount, *, expires_in_s: int = 3599
) -> Iterator[tuple[FakeGoogleOAuth, FakeFcm]]:
    """Both fakes started: the token endpoint knowing ``account``, and FCM for its project."""
    with (
        FakeGoogleOAuth(account, expires_in_s=expires_in_s) as oauth,
        FakeFcm(oauth, account.project_id) as fcm,
    ):
        yield oauth, fcm
