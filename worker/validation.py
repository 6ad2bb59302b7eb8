"""Checking one intake entry against the contract; every error in words a host developer reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.registry import JobType, Registry

ENVELOPE_FIELDS = {"type", "id", "data"}
MAX_ID_CHARS = 200


class Rejection(Exception):
    """The entry breaks the contract; ``str()`` says which field and what is wrong.

    ``reason`` is a short code for metrics: too_large, not_utf8, not_json, not_object,
    missing_job, unknown_field, unknown_type, invalid_id, invalid_data.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Accepted:
    job_type: JobType[Any]
    data: BaseModel
    payload: dict[str, Any]  # ``data`` as JSON-ready values, what the actor receives
    job_id: str | None


def validate_entry(
    raw: bytes | None, registry: Registry, max_bytes: int, context: dict[str, Any] | None = None
) -> Accepted:
    """Validate the ``job`` field of an intake entry, or raise Rejection.

    ``context`` reaches the models' validators (pydantic validation context): the intake gives
    ``{"settings": Settings, "stage": "intake", "entry": <intake entry id>}``, so a model can
    check what needs configuration, such as a provider's webhook signature, as of when the host
    received it.
    """
    if raw is None:
        raise Rejection(
            "the entry has no field 'job': add the job as XADD <stream> * job '<json>'", "missing_job"
        )
    if len(raw) > max_bytes:
        raise Rejection(
            f"the job is {len(raw)} bytes, larger than the limit of {max_bytes} bytes"
            " (TASKMASTER_INTAKE_MAX_BYTES)",
            "too_large",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            f"the job is not UTF-8 text: byte {exc.start} is invalid ({exc.reason})", "not_utf8"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejection(
            f"the job is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", "not_json"
        ) from None
    if not isinstance(document, dict):
        raise Rejection(
            f'the job must be a JSON object {{"type", "id"?, "data"}}, got {_json_kind(document)}',
            "not_object",
        )
    unknown = sorted(set(document) - ENVELOPE_FIELDS)
    if unknown:
        raise Rejection(
            f"unknown field {unknown[0]!r} in the job: allowed are type, id and data", "unknown_field"
        )
    job_type = _job_type(document, registry)
    job_id = _job_id(document)
    data = document.get("data", {})
    if not isinstance(data, dict):
        raise Rejection(f"data: must be a JSON object, got {_json_kind(data)}", "invalid_data")
    try:
        model = job_type.model.model_validate(data, context=context)
    except ValidationError as exc:
        raise Rejection(describe(exc, prefix="data"), "invalid_data") from None
    except ValueError as exc:  # a validator that raised outside pydantic's wrapping
        raise Rejection(f"data: {exc}", "invalid_data") from None
    # The context reaches serializers too: one may seal a secret for the queue (webhooks).
    payload = model.model_dump(mode="json", exclude_unset=True, context=context)
    return Accepted(job_type, model, payload, job_id)


def _job_type(document: dict[str, Any], registry: Registry) -> JobType[Any]:
    if "type" not in document:
        raise Rejection(
            "type: missing; name a job type such as email.send (`taskmaster-worker schema`)", "unknown_type"
        )
    name = document["type"]
    if not isinstance(name, str):
        raise Rejection(f"type: must be a string, got {_json_kind(name)}", "unknown_type")
    job_type = registry.get(name)
    if job_type is None or not job_type.public:
        known = ", ".join(registry.names(public_only=True))
        raise Rejection(f"type: unknown job type {name!r}; known types: {known}", "unknown_type")
    return job_type


def _job_id(document: dict[str, Any]) -> str | None:
    job_id = document.get("id")
    if job_id is None:
        return None
    if not isinstance(job_id, str):
        raise Rejection(f"id: must be a string (the idempotency key), got {_json_kind(job_id)}", "invalid_id")
    if not job_id or len(job_id) > MAX_ID_CHARS:
        raise Rejection(f"id: must be 1 to {MAX_ID_CHARS} characters, got {len(job_id)}", "invalid_id")
    return job_id


def describe(exc: ValidationError, prefix: str) -> str:
    """pydantic's errors as `data.to[0]: value is not a valid email address: ...` lines."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = prefix
        for item in error["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else f".{item}"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "missing (required)"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{loc}: {message}")
    return "; ".join(parts)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
