"""Rendering email templates: Jinja2's sandbox, strict about undefined variables, cached.

A template has a subject, an HTML body and/or a text body, each a Jinja2 template. The HTML
body is autoescaped; the subject and the text body are not (they are not HTML). Blocks trim
their own line (``trim_blocks`` and ``lstrip_blocks``), so that ``{% for %}`` lines leave no
blank lines in a text body. A variable a template uses but the email does not give is an
error naming it; so is anything the sandbox refuses (``''.__class__`` and the like).

Filters beyond Jinja2's own, for the times of a user's notifications:

- ``value|localtime(tz="UTC", format="%a %d %b, %H:%M")``: an ISO 8601 time (a naive one is
  taken as UTC) shown in the IANA zone ``tz``;
- ``items|newest_first(attribute="at")``: the items (objects) sorted by that time, newest first.
"""

from __future__ import annotations

import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.exceptions import UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from worker.errors import TaskmasterError

SUBJECT_MAX_CHARS = 998  # RFC 5322's line limit, as email.send allows
CACHE_SIZE = 512
PARTS = ("subject", "html", "text")


class TemplatingError(TaskmasterError):
    """Root of the template errors: a template that cannot be compiled or rendered."""


class TemplateInvalid(TemplatingError):
    """A template's source is not valid Jinja2; the message names the line."""


class RenderError(TemplatingError):
    """Rendering failed with these variables (undefined variable, refused by the sandbox, ...)."""


@dataclass(frozen=True)
class TemplateSource:
    """One version of a template: version 0 is a built-in one, stored versions start at 1."""

    name: str
    version: int
    subject: str
    html: str | None
    text: str | None

    @property
    def builtin(self) -> bool:
        return self.version == 0

    def describe(self) -> str:
        return (
            f"built-in template {self.name!r}" if self.builtin else f"template {self.name!r} v{self.version}"
        )


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def _to_instant(value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("a time is not in ISO 8601 form (such as 2026-07-14T12:30:00Z)") from None
    else:
        raise TypeError(f"expected an ISO 8601 time, got {type(value).__name__}")
    # Host apps commonly send UTC without an offset; times are UTC throughout the daemon.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def localtime(value: object, tz: str = "UTC", format: str = "%a %d %b, %H:%M") -> str:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None
    return _to_instant(value).astimezone(zone).strftime(format)


def newest_first(items: Iterable[object], attribute: str = "at") -> list[object]:
    # Items are looked into as mappings only: a filter doing getattr would bypass the sandbox.
    def when(item: object) -> datetime:
        if not isinstance(item, Mapping) or attribute not in item:
            raise UndefinedError(f"an item has no {attribute!r}")
        return _to_instant(item[attribute])

    return sorted(items, key=when, reverse=True)


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        cache_size=0,  # compiled templates are cached by (name, version) here instead
    )
    env.filters["localtime"] = localtime
    env.filters["newest_first"] = newest_first
    return env


_HTML_ENV = _environment(autoescape=True)
_PLAIN_ENV = _environment(autoescape=False)


def _env_for(part: str) -> SandboxedEnvironment:
    return _HTML_ENV if part == "html" else _PLAIN_ENV


def check_syntax(source: str, part: str = "text") -> None:
    """Raise TemplateInvalid with the line and Jinja2's message when ``source`` does not compile."""
    try:
        _env_for(part).parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(f"template syntax error at line {exc.lineno}: {exc.message}") from exc


@dataclass(frozen=True)
class _Compiled:
    sources: tuple[str, str | None, str | None]
    templates: dict[str, Template]


class Renderer:
    """Renders templates; compiled ones are kept per (name, version), least recently used out.

    A cached entry also keeps its source and is compiled again when the source differs, so
    two databases with the same (name, version) (tests, staging) never see each other's text.
    """

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, int], _Compiled] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.compiles = 0  # how many templates were compiled, for tests and benchmarks

    def render(
        self, source: TemplateSource, variables: Mapping[str, Any], *, subject: str | None = None
    ) -> Rendered:
        """Render every part; ``subject`` given replaces the template's subject, unrendered."""
        compiled = self._compiled(source)
        if subject is None:
            subject = self._render_part(source, compiled, "subject", variables)
            if "\r" in subject or "\n" in subject:
                raise RenderError(
                    f"{source.describe()}: the subject must be one line, it rendered with CR or LF"
                )
            subject = subject.strip()
            if len(subject) > SUBJECT_MAX_CHARS:
                raise RenderError(
                    f"{source.describe()}: the subject is longer than {SUBJECT_MAX_CHARS} characters"
                )
        html = self._render_part(source, compiled, "html", variables) if source.html is not None else None
        if source.text is not None:
            text = self._render_part(source, compiled, "text", variables)
        else:
            text = html_to_text(html or "")
        return Rendered(subject=subject, text=text, html=html)

    def _compiled(self, source: TemplateSource) -> _Compiled:
        key = (source.name, source.version)
        sources = (source.subject, source.html, source.text)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry.sources == sources:
                self._cache.move_to_end(key)
                return entry
        templates = {}
        for part, text in zip(PARTS, sources, strict=True):
            if text is not None:
                templates[part] = self._compile(source, part, text)
        entry = _Compiled(sources, templates)
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            self.compiles += 1
        return entry

    @staticmethod
    def _compile(source: TemplateSource, part: str, text: str) -> Template:
        env = _env_for(part)
        label = _label(source, part)
        try:
            code = env.compile(text, name=label, filename=label)
        except TemplateSyntaxError as exc:
            raise RenderError(f"{source.describe()} {part}, line {exc.lineno}: {exc.message}") from exc
        return env.template_class.from_code(env, code, env.make_globals(None), None)

    @staticmethod
    def _render_part(
        source: TemplateSource, compiled: _Compiled, part: str, variables: Mapping[str, Any]
    ) -> str:
        try:
            return compiled.templates[part].render(variables)
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            # Jinja2's messages name the variable, not its value (which may be personal data),
            # and this module's filters do the same.
            where = f"{source.describe()} {part}"
            line = _template_line(exc, _label(source, part))
            if line is not None:
                where += f", line {line}"
            message = exc.message if isinstance(exc, TemplateError) and exc.message else str(exc)
            raise RenderError(f"{where}: {message}") from exc


def _label(source: TemplateSource, part: str) -> str:
    return f"{source.name}@{source.version}.{part}"


def _template_line(exc: BaseException, label: str) -> int | None:
    """The template line being rendered: Jinja2 rewrites tracebacks to template lines."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == label]
    return lines[-1] if lines else None


renderer = Renderer()
render = renderer.render


# HTML to text, by hand on the standard library's parser: the libraries that do it are
# html2text (GPL, and writes Markdown rather than plain text) and inscriptis or BeautifulSoup
# (not dependencies); our templates' HTML is simple email markup, which this covers.
# fmt: off
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "div", "dl", "figure", "footer", "form", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p", "pre", "section", "table", "ul",
})
# fmt: on
_LINES = frozenset({"li", "tr", "dt", "dd"})
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._pending_breaks = 0
        self._line_start = True
        self._hidden = 0
        self._pre = 0
        self._lists: list[int | None] = []  # None: a bullet list; a number: an ordered one
        self._links: list[tuple[str | None, int]] = []  # href, where the link's text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._write("\n", breaking=False)
        elif tag in ("ul", "ol"):
            self._request(1 if self._lists else 2)
            self._lists.append(0 if tag == "ol" else None)
        elif tag in _BLOCKS:
            self._request(2)
            if tag == "pre":
                self._pre += 1
        elif tag == "li":
            self._request(1)
            depth = max(len(self._lists), 1)
            counter = self._lists[-1] if self._lists else None
            if counter is not None:
                self._lists[-1] = counter + 1
            self._write("  " * (depth - 1) + (f"{counter + 1}. " if counter is not None else "- "))
        elif tag in _LINES:
            self._request(1)
        elif tag in ("td", "th"):
            if not self._line_start and not self._pending_breaks:
                self._write("  ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.handle_data(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._request(1 if self._lists else 2)
        elif tag in _BLOCKS:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._request(2)
        elif tag in _LINES:
            self._request(1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.parts[start:]).strip()
            if href and not href.startswith("#") and href.removeprefix("mailto:") != label:
                self._write(f" ({href.removeprefix('mailto:')})" if label else href)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if not self._pre:
            # HTML's white space is these five; a no-break space (&nbsp;) is text and stays.
            data = _HTML_SPACE.sub(" ", data)
            if self._line_start or self._pending_breaks or (self.parts and self.parts[-1].endswith(" ")):
                data = data.lstrip(" ")
            if not data:
                return
        self._write(data)

    def _request(self, breaks: int) -> None:
        self._pending_breaks = max(self._pending_breaks, breaks)

    def _write(self, text: str, *, breaking: bool = True) -> None:
        if self._hidden:
            return
        if self._pending_breaks and breaking:
            if self.parts:
                self.parts.append("\n" * self._pending_breaks)
            self._pending_breaks = 0
        self.parts.append(text)
        self._line_start = text.endswith("\n")


def html_to_text(html: str) -> str:
    """A plain-text rendering of an email's HTML: paragraphs, line breaks, lists, links kept."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
