"""Parsing and validating a schedules document; every problem names the file, line and entry.

Line numbers come from PyYAML's node marks (the composed node tree), values from its safe
constructor; keys are read as written, so an entry called ``yes`` stays a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from worker.durations import parse_duration_s
from worker.errors import ConfigError
from worker.registry import Registry
from worker.scheduler.entry import (
    CATCHUP,
    DEFAULT_MISFIRE_GRACE_S,
    ENTRY_KEYS,
    NAME_PATTERN,
    OVERLAP,
    TOP_KEYS,
    Entry,
    Schedule,
)
from worker.scheduler.timing import Cron, Every, Trigger


def parse_schedule(text: str, source: str, registry: Registry, *, is_default: bool = False) -> Schedule:
    """Validate a schedules document; raise ConfigError listing every problem, one per line."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(_yaml_problem(exc, text, source)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}") from None
        parser = _Parser(loader, source, registry)
        schedule = parser.schedule(root, is_default)
    finally:
        loader.dispose()
    if parser.problems:
        raise ConfigError("\n".join(text for _, text in sorted(parser.problems, key=lambda p: p[0])))
    return schedule


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 0
    message = f"{source}:{line}: invalid YAML: {exc.problem or exc.context}"
    lines = text.splitlines()
    if mark and mark.line < len(lines) and "*" in lines[mark.line]:
        message += ' (a value that starts with * must be quoted, e.g. cron: "*/15 * * * *")'
    return message


class _Parser:
    def __init__(self, loader: yaml.SafeLoader, source: str, registry: Registry) -> None:
        self.loader = loader
        self.source = source
        self.registry = registry
        self.problems: list[tuple[int, str]] = []

    def problem(self, node: yaml.Node, message: str, entry: str | None = None) -> None:
        line = node.start_mark.line + 1
        where = f"{self.source}:{line}"
        self.problems.append(
            (line, f"{where}: entry {entry!r}: {message}" if entry else f"{where}: {message}")
        )

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, what: str, entry: str | None = None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The pairs of a mapping node by key text; reports a non-mapping or a repeated key."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping", entry)
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, f"{what}: keys must be plain names", entry)
                continue
            if key_node.value in out:
                self.problem(key_node, f"{what}: {key_node.value!r} is given twice", entry)
            out[key_node.value] = (key_node, value_node)
        return out

    def schedule(self, root: yaml.Node | None, is_default: bool) -> Schedule:
        top = self.mapping(root, "the file") if root is not None else {}
        for key, (key_node, _) in top.items():
            if key not in TOP_KEYS:
                self.problem(key_node, f"unknown key {key!r}; allowed: {', '.join(TOP_KEYS)}")
        zone = "UTC"
        if "timezone" in top:
            zone = self.zone(top["timezone"][1], None) or "UTC"
        entries: dict[str, Entry] = {}
        if "schedules" in top and not _is_null(top["schedules"][1]):
            for name, (key_node, node) in self.mapping(top["schedules"][1], "schedules").items():
                if not NAME_PATTERN.match(name):
                    self.problem(key_node, "entry names use letters, digits, '_', '.' and '-'", name)
                    continue
                entry = self.entry(name, key_node, node, zone)
                if entry is not None:
                    entries[name] = entry
        return Schedule(timezone=zone, entries=entries, source=self.source, is_default=is_default)

    def zone(self, node: yaml.Node, entry: str | None) -> str | None:
        name = self.value(node)
        try:
            if not isinstance(name, str):
                raise ValueError
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(
                node, f"timezone {name!r} is not an IANA time zone; use e.g. UTC or Europe/Berlin", entry
            )
            return None
        return name

    def duration(self, node: yaml.Node, what: str, entry: str) -> float | None:
        try:
            return parse_duration_s(self.value(node))
        except ValueError as exc:
            self.problem(node, f"{what}: {exc}", entry)
            return None

    def choice(self, node: yaml.Node, what: str, allowed: tuple[str, ...], entry: str) -> str | None:
        value = self.value(node)
        if value not in allowed:
            self.problem(node, f"{what} {value!r} is not allowed; use one of: {', '.join(allowed)}", entry)
            return None
        return str(value)

    def entry(self, name: str, key_node: yaml.Node, node: yaml.Node, default_zone: str) -> Entry | None:
        before = len(self.problems)
        fields = self.mapping(node, "an entry", name)
        if not fields:
            if not self.problems[before:]:
                self.problem(node, "an entry needs a job and a cron or every", name)
            return None
        for key, (k_node, _) in fields.items():
            if key not in ENTRY_KEYS:
                self.problem(k_node, f"unknown key {key!r}; allowed: {', '.join(ENTRY_KEYS)}", name)
        values: dict[str, Any] = {}
        zone = self.zone(fields["timezone"][1], name) if "timezone" in fields else default_zone
        job = self.job(fields, key_node, name)
        values["trigger"] = self.trigger(fields, key_node, name, zone or "UTC")
        for key in ("jitter", "misfire_grace"):
            if key in fields:
                values[key] = self.duration(fields[key][1], key, name)
        if "misfire_grace" in fields and values["misfire_grace"] == 0:
            self.problem(fields["misfire_grace"][1], "misfire_grace must be more than 0", name)
        if "enabled" in fields:
            values["enabled"] = self.value(fields["enabled"][1])
            if not isinstance(values["enabled"], bool):
                self.problem(
                    fields["enabled"][1], f"enabled must be true or false, not {values['enabled']!r}", name
                )
        if "catchup" in fields:
            values["catchup"] = self.choice(fields["catchup"][1], "catchup", CATCHUP, name)
        if "overlap" in fields:
            values["overlap"] = self.choice(fields["overlap"][1], "overlap", OVERLAP, name)
        data = self.data(fields, key_node, name, job)
        if len(self.problems) > before or job is None or zone is None:
            return None
        return Entry(
            name=name,
            job=job,
            trigger=values["trigger"],
            timezone=zone,
            data=data,
            jitter_s=values.get("jitter", 0.0),
            misfire_grace_s=values.get("misfire_grace", DEFAULT_MISFIRE_GRACE_S),
            enabled=values.get("enabled", True),
            catchup=values.get("catchup", "once"),
            overlap=values.get("overlap", "skip"),
            line=key_node.start_mark.line + 1,
        )

    def job(
        self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key_node: yaml.Node, name: str
    ) -> str | None:
        known = self.registry.names()
        allowed = (
            f"known jobs: {', '.join(known)}" if known else "no jobs are registered (TASKMASTER_JOB_MODULES)"
        )
        if "job" not in fields:
            self.problem(key_node, f"job is missing; {allowed}", name)
            return None
        node = fields["job"][1]
        job = self.value(node)
        if not isinstance(job, str) or job not in known:
            self.problem(node, f"unknown job {job!r}; {allowed}", name)
            return None
        return job

    def trigger(
        self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key_node: yaml.Node, name: str, zone: str
    ) -> Trigger | None:
        if ("cron" in fields) == ("every" in fields):
            node = fields["every"][0] if "every" in fields else key_node
            self.problem(node, "give exactly one of cron (5 fields) or every (a duration such as 5m)", name)
            return None
        if "every" in fields:
            node = fields["every"][1]
            seconds = self.duration(node, "every", name)
            if seconds is None:
                return None
            if seconds < 1 or seconds != int(seconds):
                self.problem(
                    node, f"every must be a whole number of seconds, at least 1s (got {seconds:g}s)", name
                )
                return None
            return Every(int(seconds))
        node = fields["cron"][1]
        expr = self.value(node)
        if not isinstance(expr, str):
            self.problem(
                node, f'cron must be a string of 5 fields, such as "0 6 * * 1-5", not {expr!r}', name
            )
            return None
        try:
            cron = Cron(" ".join(expr.split()), ZoneInfo(zone))
        except ValueError as exc:
            self.problem(node, str(exc), name)
            return None
        if cron.next_after(datetime.now(ZoneInfo("UTC"))) is None:
            self.problem(node, f"cron {expr!r} never fires (no such date)", name)
            return None
        return cron

    def data(
        self,
        fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
        key_node: yaml.Node,
        name: str,
        job: str | None,
    ) -> dict[str, Any]:
        node = fields["data"][1] if "data" in fields else None
        raw = self.value(node) if node is not None else None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem(node or key_node, "data must be a mapping of the job's fields", name)
            return {}
        data: dict[str, Any] = _jsonable(raw)
        job_type = self.registry.get(job) if job else None
        if job_type is None:
            return data
        try:
            job_type.model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False, include_input=False):
                loc = [str(part) for part in error["loc"]]
                where = _find(node, error["loc"]) if node is not None else key_node
                path = ".".join(["data", *loc])
                self.problem(where, f"{path}: {error['msg']} (job {job})", name)
        return data


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _find(node: yaml.Node, loc: tuple[int | str, ...]) -> yaml.Node:
    """The deepest node of ``node`` along a pydantic error location, for its line number."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if not match:
                return node
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _jsonable(value: Any) -> Any:
    """YAML's values as JSON would carry them to the job (YAML turns 2026-01-01 into a date)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
