"""Email templates without Redis: rendering, the sandbox, text from HTML, built-ins, validation."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jobs.email import builtin
from jobs.email.models import EmailSend
from jobs.email.templating import (
    Renderer,
    RenderError,
    TemplateInvalid,
    TemplateSource,
    check_syntax,
    html_to_text,
    localtime,
    render,
)
from worker.registry import JobType, registry
from worker.validation import describe


@contextmanager
def template_jobs_registered() -> Iterator[ModuleType]:
    """jobs.email.template_jobs with `template.upsert` registered, and the registry as it was after.

    Until jobs.email imports the module itself, importing it registers a job type for the rest
    of the process, which other tests (the intake's list of known types) would see.
    """
    before = dict(registry._types)
    module = importlib.import_module("jobs.email.template_jobs")
    if registry.get("template.upsert") is None:
        registry.add(JobType("template.upsert", module.TemplateUpsert, module.upsert_template))
    try:
        yield module
    finally:
        registry._types.clear()
        registry._types.update(before)


@pytest.fixture
def upsert_model() -> Iterator[type[BaseModel]]:
    with template_jobs_registered() as module:
        yield module.TemplateUpsert


def source(
    subject: str = "Hi", html: str | None = None, text: str | None = None, version: int = 1
) -> TemplateSource:
    return TemplateSource(name="t", version=version, subject=subject, html=html, text=text)


def test_html_is_autoescaped_and_subject_and_text_are_not() -> None:
    """A variable with markup is escaped in the HTML body, and left as written in subject and text."""
    template = source(subject="Re: {{ topic }}", html="<p>{{ topic }}</p>", text="About {{ topic }}")
    rendered = render(template, {"topic": "<b>Tom & Jerry</b>"})
    assert rendered.html == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert rendered.subject == "Re: <b>Tom & Jerry</b>"
    assert rendered.text == "About <b>Tom & Jerry</b>"


def test_an_undefined_variable_is_an_error_naming_it_and_its_line() -> None:
    """StrictUndefined: a variable the email does not give fails the render, naming it and the line."""
    template = source(html="<h1>Hello</h1>\n<p>{{ user_name }}</p>", text="ok")
    with pytest.raises(RenderError) as caught:
        render(template, {})
    assert "'user_name' is undefined" in str(caught.value)
    assert "html, line 2" in str(caught.value)


def test_a_missing_attribute_is_named() -> None:
    """A missing key of an object variable is an error naming the key, not an empty string."""
    with pytest.raises(RenderError, match="has no attribute 'nmae'"):
        render(source(text="{{ user.nmae }}"), {"user": {"name": "Ada"}})


def test_optional_variables_are_written_with_default_or_is_defined() -> None:
    """`default` and `is defined` keep working under StrictUndefined, for optional variables."""
    template = source(text="Hi {{ name|default('there') }}{% if url is defined %} {{ url }}{% endif %}")
    assert render(template, {}).text == "Hi there"
    assert render(template, {"name": "Ada", "url": "u"}).text == "Hi Ada u"


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "().__class__.__base__.__subclasses__()",
        "cycler.__init__.__globals__",
        "x.__class__",
        "'{0.__class__}'.format(x)",
        "x.items.__self__",
        "lipsum.__globals__",
    ],
)
def test_the_sandbox_refuses_unsafe_attribute_access(expression: str) -> None:
    """Dunder attributes and str.format tricks are refused by the sandbox: the render fails."""
    with pytest.raises(RenderError) as caught:
        render(source(text="{{ " + expression + " }}"), {"x": {"a": 1}})
    assert "object is unsafe" in str(caught.value)


def test_text_is_derived_from_the_html_when_absent() -> None:
    """A template without a text body gets one made from its rendered HTML."""
    template = source(html="<h1>Welcome, {{ name }}</h1><p>Start <a href='{{ url }}'>here</a>.</p>")
    rendered = render(template, {"name": "Ada & co", "url": "https://app.example.com/start"})
    assert rendered.text == "Welcome, Ada & co\n\nStart here (https://app.example.com/start).\n"


def test_html_to_text_keeps_the_structure_a_reader_needs() -> None:
    """Paragraphs, line breaks, lists, links and entities survive; scripts, styles and the head do not."""
    html = """<html><head><title>T</title><style>p {color: red}</style></head><body>
    <h1>Title</h1><p>First   line<br>second&nbsp;line &amp; more</p>
    <ul><li>one</li><li>two <a href="https://x.example/2">link</a></li></ul>
    <ol><li>first</li><li>second</li></ol>
    <table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
    <script>alert(1)</script><p><a href="https://x.example">https://x.example</a>
    <img src="logo.png" alt="Logo"></p></body></html>"""
    assert html_to_text(html) == (
        "Title\n\nFirst line\nsecond\xa0line & more\n\n- one\n- two link (https://x.example/2)\n\n"
        "1. first\n2. second\n\na  b\nc  d\n\nhttps://x.example Logo\n"
    )


def test_a_subject_that_renders_to_several_lines_is_refused() -> None:
    """A variable with a line break cannot split the subject into a second header."""
    with pytest.raises(RenderError, match="subject must be one line"):
        render(source(subject="Hi {{ name }}", text="x"), {"name": "Ada\r\nBcc: eve@example.com"})


def test_a_subject_given_replaces_the_templates_unrendered() -> None:
    """email.send's own subject wins over the template's, taken as written (not a template)."""
    rendered = render(source(subject="{{ missing }}", text="x"), {}, subject="Literal {{ x }}")
    assert rendered.subject == "Literal {{ x }}"


def test_compiled_templates_are_cached_by_name_and_version() -> None:
    """Rendering again compiles nothing; a new version, or other text under one version, compiles."""
    renderer = Renderer()
    v1 = source(html="<p>{{ n }}</p>")
    for n in range(3):
        renderer.render(v1, {"n": n})
    assert renderer.compiles == 1
    renderer.render(source(html="<p>{{ n }}!</p>", version=2), {"n": 1})
    assert renderer.compiles == 2
    # Another database with the same (name, version) but other text is never served stale.
    assert renderer.render(source(html="<i>{{ n }}</i>"), {"n": 1}).html == "<i>1</i>"
    assert renderer.compiles == 3


def test_a_syntax_error_names_the_line_and_the_problem() -> None:
    """check_syntax says where the template breaks and what Jinja2 expected."""
    with pytest.raises(TemplateInvalid) as caught:
        check_syntax("<p>ok</p>\n{% for x in items %}\n<p>{{ x }</p>", "html")
    assert str(caught.value).startswith("template syntax error at line 3:")


def test_template_upsert_rejects_a_syntax_error_at_intake(upsert_model: type[BaseModel]) -> None:
    """The intake's error names the field, the line and the message."""
    with pytest.raises(ValidationError) as caught:
        upsert_model.model_validate({"name": "welcome", "subject": "Hi", "html": "<p>\n{% if %}</p>"})
    assert describe(caught.value, prefix="data").startswith(
        "data.html: template syntax error at line 2: Expected an expression"
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "w", "subject": "Hi {{ x", "text": "t"}, "data.subject: template syntax error at line 1"),
        ({"name": "w", "subject": "Hi\nthere", "text": "t"}, "data.subject: must be a single line"),
        ({"name": "w", "subject": "Hi"}, "give html, text or both"),
        ({"name": "no spaces", "subject": "Hi", "text": "t"}, "data.name: String should match pattern"),
    ],
)
def test_template_upsert_validation(upsert_model: type[BaseModel], data: dict[str, Any], error: str) -> None:
    """template.upsert refuses a broken subject, a missing body and an unusable name."""
    with pytest.raises(ValidationError) as caught:
        upsert_model.model_validate(data)
    assert error in describe(caught.value, prefix="data")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"template": "welcome", "html": "<p>x</p>"}, "give a template or text/html bodies, not both"),
        ({"subject": "Hi", "text": "x", "variables": {"a": 1}}, "variables are for a template"),
        ({"text": "x"}, "data.subject: missing (required)"),
        ({"subject": "Hi"}, "give text, html or both"),
        (
            {"template": "welcome", "subject": "Hi\r\nBcc: x@example.com"},
            "data.subject: must be a single line",
        ),
        ({"template": "../etc"}, "data.template: String should match pattern"),
    ],
)
def test_email_send_takes_a_template_or_a_subject_and_bodies(data: dict[str, Any], error: str) -> None:
    """email.send: a template (with variables, optionally a subject) or a subject and bodies."""
    with pytest.raises(ValidationError) as caught:
        EmailSend.model_validate({"to": "a@example.com", **data})
    assert error in describe(caught.value, prefix="data")


def test_email_send_with_a_template_is_valid_without_subject_or_bodies() -> None:
    """Whether the template exists is not checked at intake (it may be on its way)."""
    email = EmailSend.model_validate({"to": "a@example.com", "template": "not-yet", "variables": {"n": 1}})
    assert email.template == "not-yet" and email.variables == {"n": 1} and email.subject is None


def test_email_sends_json_schema_states_template_or_subject_and_body() -> None:
    """Hosts validating with `taskmaster-worker schema` see the same rule: to, then one of two shapes."""
    schema = EmailSend.model_json_schema()
    assert schema["required"] == ["to"]
    with_template, with_content = schema["oneOf"]
    assert with_template["required"] == ["template"] and with_content["required"] == ["subject"]
    assert {"template", "variables", "subject", "text", "html"} <= set(schema["properties"])


DIGEST_VARIABLES: dict[str, Any] = {
    "user_name": "Ada",
    "timezone": "Europe/Berlin",
    "manage_url": "https://app.example.com/settings/notifications",
    "items": [
        {
            "category": "task_due",
            "title": "Send the Q3 report",
            "at": "2026-07-14T12:30:00Z",
            "body": "Due today at 17:00",
            "url": "https://app.example.com/t/42",
        },
        {
            "category": "comment",
            "title": "Eve commented on <Launch plan>",
            "at": "2026-07-13T22:15:00Z",
            "body": "Looks good & ready",
        },
        {"category": "task_due", "title": "Call Bob", "at": "2026-07-14T15:05:00+00:00"},
        {"category": "task_due", "title": "Book the venue", "at": "2026-07-13T07:00:00"},
    ],
}


def test_the_builtin_digest_groups_by_category_newest_first_in_the_users_time_zone() -> None:
    """The digest counts items, groups them by category, lists the newest first, at Berlin times."""
    digest = builtin.load("digest")
    assert digest is not None and digest.builtin
    rendered = render(digest, DIGEST_VARIABLES)
    assert rendered.subject == "Your digest: 4 new notifications"
    assert rendered.text == (
        "Hi Ada, you have 4 new notifications in 2 categories.\n"
        "\n"
        "Comment (1)\n"
        "- Tue 14 Jul, 00:15  Eve commented on <Launch plan>\n"
        "  Looks good & ready\n"
        "\n"
        "Task due (3)\n"
        "- Tue 14 Jul, 17:05  Call Bob\n"
        "- Tue 14 Jul, 14:30  Send the Q3 report\n"
        "  Due today at 17:00\n"
        "  https://app.example.com/t/42\n"
        "- Mon 13 Jul, 09:00  Book the venue\n"
        "\n"
        "Times are shown in Europe/Berlin.\n"
        "Notification settings: https://app.example.com/settings/notifications\n"
    )
    assert rendered.html is not None
    html = rendered.html
    assert "Eve commented on &lt;Launch plan&gt;" in html and "Looks good &amp; ready" in html
    assert '<a href="https://app.example.com/t/42"' in html
    assert html.index("Call Bob") < html.index("Send the Q3 report") < html.index("Book the venue")
    assert "Task due (3)" in html and "Comment (1)" in html


def test_the_builtin_digest_needs_only_its_items() -> None:
    """Time zone, name and settings link are optional: UTC and a plain greeting without them."""
    digest = builtin.load("digest")
    assert digest is not None
    one = {"items": [{"category": "mention", "title": "You were mentioned", "at": "2026-01-05T08:00:00Z"}]}
    rendered = render(digest, one)
    assert rendered.subject == "Your digest: 1 new notification"
    assert "Hi there, you have 1 new notification in 1 category." in rendered.text
    assert "Mon 05 Jan, 08:00  You were mentioned" in rendered.text and "shown in UTC" in rendered.text


def test_the_builtin_digest_refuses_an_unknown_time_zone() -> None:
    """A time zone that is not an IANA name fails the render and says which."""
    digest = builtin.load("digest")
    assert digest is not None
    with pytest.raises(RenderError, match="unknown time zone 'Mars/Olympus'"):
        render(digest, {**DIGEST_VARIABLES, "timezone": "Mars/Olympus"})


def test_the_builtin_system_message_keeps_paragraphs_and_its_action() -> None:
    """The system template: title as subject and heading, the message's paragraphs, a link."""
    system = builtin.load("system")
    assert system is not None
    variables = {
        "title": "Maintenance <tonight>",
        "message": "We will be down.\nFor an hour.\n\nThanks & sorry.",
        "action_url": "https://status.example.com",
        "action_label": "Status",
    }
    rendered = render(system, variables)
    assert rendered.subject == "Maintenance <tonight>"
    assert rendered.html is not None
    assert '<p style="margin:0 0 12px;">We will be down.<br>For an hour.</p>' in rendered.html
    assert "Thanks &amp; sorry." in rendered.html and "<h1" in rendered.html
    assert rendered.text == (
        "Maintenance <tonight>\n\nWe will be down.\nFor an hour.\n\nThanks & sorry.\n\n"
        "Status: https://status.example.com\n"
    )
    assert builtin.load("no-such") is None


def test_localtime_reads_naive_times_as_utc() -> None:
    """An ISO time without an offset is UTC; it is shown in the zone asked for, across DST."""
    assert localtime("2026-03-29T00:30:00", "Europe/Berlin", "%H:%M %Z") == "01:30 CET"
    assert localtime("2026-03-29T01:30:00Z", "Europe/Berlin", "%H:%M %Z") == "03:30 CEST"
