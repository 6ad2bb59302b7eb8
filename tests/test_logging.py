"""No secret reaches a log line, wherever it hides in an event."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from worker.logging import REDACTED, configure_logging, redact, redact_text


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer ya29.a0AfH6SMBx-secret-token-value",
        "calling https://api.example.test/cb?code=1&access_token=abcdef123456&x=1",
        "redis://:hunter2secret@redis.internal:6379/0",
        "key SG.abcdefghijklmnop.qrstuvwxyz0123456789 rejected",
        "resend key re_123456789abcdef",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "webhook secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "refresh token 1//0gLx-abcdefghijklmnopqrstuvwxyz",
        "password=letmein123 user=bob",
    ],
)
def test_secret_looking_text_is_redacted(text: str) -> None:
    """Tokens, keys, passwords and Authorization values are replaced wherever they appear."""
    cleaned = redact_text(text)
    assert REDACTED in cleaned
    for secret in ("secret-token-value", "abcdef123456", "hunter2secret", "qrstuvwxyz0123456789",
                   "123456789abcdef", "dozjgNryP4J3jVmNHl0w5N", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                   "abcdefghijklmnopqrstuvwxyz", "letmein123"):  # fmt: skip
        assert secret not in cleaned


def test_secret_keys_are_redacted_in_nested_structures() -> None:
    """Values under secret-sounding keys are hidden at any depth; the rest stays readable."""
    event = {"headers": {"Authorization": "x", "Content-Type": "json"}, "items": [{"api_key": "k", "n": 1}]}
    assert redact(event) == {
        "headers": {"Authorization": REDACTED, "Content-Type": "json"},
        "items": [{"api_key": REDACTED, "n": 1}],
    }


def test_log_lines_carry_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON log line of an event full of secrets shows none of them."""
    configure_logging("info", "json")
    try:
        structlog.get_logger("t").info(
            "calling provider",
            password="pw-123456",
            refresh_token="1//0abcdefghijklmnop",
            request={"headers": {"authorization": "Bearer abcdefghijk"}},
            url="https://x.test/?client_secret=abcdef123",
        )
        logging.getLogger("stdlib").warning("dsn redis://:topsecret1@host:1/0")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert lines[0]["event"] == "calling provider"
    for secret in ("pw-123456", "abcdefghijklmnop", "abcdefghijk", "abcdef123", "topsecret1"):
        assert secret not in err
