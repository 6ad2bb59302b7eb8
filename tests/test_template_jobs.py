"""Templates through the real path: template.upsert and email.send on Dramatiq workers against a
real Redis and SQL database (SQLite, and PostgreSQL with TEST_DATABASE_URL), and the preview CLI."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis

import jobs.email.cli  # noqa: F401  (registers `templates`, as jobs.email will once it imports it)
from jobs.email import template_store
from jobs.email.template_store import TemplateStore, find_template
from tests.helpers import events, wait_for
from tests.test_templates import DIGEST_VARIABLES, template_jobs_registered
from tests.test_worker_inprocess import Harness
from worker.cli.main import main
from worker.db import migrate
from worker.db.session import make_engine
from worker.settings import load_settings


@pytest.fixture
def db_env(env: dict[str, str], db_url: str) -> dict[str, str]:
    """The test's Redis and data dir, the database at its head revision, quick retries."""
    migrate.upgrade(db_url)
    return {
        **env,
        "TASKMASTER_DATABASE_URL": db_url,
        "TASKMASTER_JOB_MIN_BACKOFF": "0.05",
        "TASKMASTER_JOB_MAX_RETRIES": "2",
    }


@pytest.fixture
def store(db_url: str, db_env: dict[str, str]) -> Iterator[TemplateStore]:
    engine = make_engine(db_url)
    yield TemplateStore(engine)
    engine.dispose()


@pytest.fixture
def harness(db_env: dict[str, str]) -> Iterator[Harness]:
    with template_jobs_registered():
        h = Harness(load_settings(db_env))
        h.worker.start()
        yield h
        h.close()


def submit_and_wait(h: Harness, client: redis.Redis, job: dict[str, Any], event_type: str) -> dict[str, Any]:
    entry = h.submit(client, job)
    found = wait_for(
        lambda: [
            e for e in events(client) if e["type"] in (event_type, "job.dead") and e["data"]["entry"] == entry
        ],
        what=f"{event_type} of {job['type']}",
    )
    assert found[0]["type"] == event_type, found[0]
    return found[0]["data"]


def outbox_message(h: Harness, timeout_s: float = 10.0) -> EmailMessage:
    (path,) = wait_for(
        lambda: list(h.runtime.settings.outbox_dir.glob("*.eml")), timeout_s=timeout_s, what="the .eml"
    )
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def bodies(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    # The outbox writes SMTP's CRLF line ends.
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


WELCOME = {"name": "welcome", "subject": "Welcome, {{ name }}", "html": "<p>Hi {{ name }}, v1</p>"}


def test_each_upsert_stores_a_version_and_email_send_uses_the_latest(
    harness: Harness, redis_client: redis.Redis, store: TemplateStore
) -> None:
    """Versions 1 and 2 are both kept; a repeat of the latest adds none; emails render version 2."""
    # Given two versions of a template, and the second one upserted again (a retried job)
    first = submit_and_wait(
        harness, redis_client, {"type": "template.upsert", "data": WELCOME}, "template.upserted"
    )
    v2 = {**WELCOME, "html": "<p>Hi {{ name }}, v2</p>", "text": "Hi {{ name }} (v2)"}
    second = submit_and_wait(
        harness, redis_client, {"type": "template.upsert", "data": v2}, "template.upserted"
    )
    again = submit_and_wait(
        harness, redis_client, {"type": "template.upsert", "data": v2}, "template.upserted"
    )
    assert (first["version"], second["version"], again["version"]) == (1, 2, 2)
    assert (first["created"], again["created"]) == (True, False)
    assert [(t.version, t.html) for t in store.versions("welcome")] == [
        (1, "<p>Hi {{ name }}, v1</p>"),
        (2, "<p>Hi {{ name }}, v2</p>"),
    ]
    # When an email names the template
    job = {
        "type": "email.send",
        "id": "w-1",
        "data": {"to": "a@example.com", "template": "welcome", "variables": {"name": "Ada"}},
    }
    sent = submit_and_wait(harness, redis_client, job, "email.sent")
    # Then the latest version was rendered, and the event says which
    assert (sent["template"], sent["template_version"]) == ("welcome", 2)
    assert bodies(outbox_message(harness)) == ("Hi Ada (v2)\n", "<p>Hi Ada, v2</p>\n")


def test_email_send_with_a_template_ends_as_an_eml_with_rendered_parts(
    harness: Harness, redis_client: redis.Redis, store: TemplateStore
) -> None:
    """Subject, text (derived from the HTML) and escaped HTML, in the outbox's .eml."""
    store.add_version(
        "invite", "{{ who }} invited you to {{ project }}", "<p>Join <b>{{ project }}</b></p>", None
    )
    variables = {"who": "Eve", "project": "Q3 <launch> & more"}
    data = {"to": "a@example.com", "cc": "b@example.com", "template": "invite", "variables": variables}
    job = {"type": "email.send", "id": "i-1", "data": data}
    submit_and_wait(harness, redis_client, job, "email.sent")
    message = outbox_message(harness)
    assert message["Subject"] == "Eve invited you to Q3 <launch> & more"
    assert message["To"] == "a@example.com" and message["Cc"] == "b@example.com"
    assert bodies(message) == (
        "Join Q3 <launch> & more\n",
        "<p>Join <b>Q3 &lt;launch&gt; &amp; more</b></p>\n",
    )


def test_a_subject_given_with_a_template_overrides_it(
    harness: Harness, redis_client: redis.Redis, store: TemplateStore
) -> None:
    """email.send's subject replaces the built-in template's, the bodies still come from it."""
    job = {
        "type": "email.send",
        "id": "s-1",
        "data": {
            "to": "a@example.com",
            "template": "system",
            "subject": "Your export is ready",
            "variables": {"title": "Export", "message": "Download it within a day."},
        },
    }
    sent = submit_and_wait(harness, redis_client, job, "email.sent")
    assert sent["template_version"] == 0  # the built-in one: none is stored
    message = outbox_message(harness)
    assert message["Subject"] == "Your export is ready"
    assert "Download it within a day." in bodies(message)[0]


def test_an_email_waits_for_its_template_then_uses_it(
    harness: Harness, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template not there yet is NotReady: the email is retried, and sent once it is upserted."""
    lookups: list[str] = []

    def counting_find(store: TemplateStore | None, name: str) -> Any:
        lookups.append(name)
        return find_template(store, name)

    monkeypatch.setattr(template_store, "find_template", counting_find)
    # Given an email whose template has not arrived, tried twice already
    job = {
        "type": "email.send",
        "id": "late-1",
        "data": {"to": "a@example.com", "template": "late", "variables": {"n": 3}},
    }
    entry = harness.submit(redis_client, job)
    wait_for(lambda: len(lookups) >= 2, what="a retry of the email")
    # When the template arrives
    upsert = {
        "type": "template.upsert",
        "data": {"name": "late", "subject": "{{ n }} tasks", "text": "{{ n }}"},
    }
    submit_and_wait(harness, redis_client, upsert, "template.upserted")
    # Then the email is sent with it (at its next retry: backoff doubles, up to a minute), and was
    # never dead-lettered
    assert outbox_message(harness, timeout_s=90)["Subject"] == "3 tasks"
    wait_for(
        lambda: [e for e in events(redis_client) if e["type"] == "email.sent" and e["data"]["entry"] == entry]
    )
    assert not [e for e in events(redis_client) if e["type"] == "job.dead"]


def test_a_template_that_never_comes_fails_the_email_clearly(
    db_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """Past TASKMASTER_NOT_READY_MAX_AGE the email is dead-lettered, naming the missing template."""
    h = Harness(load_settings({**db_env, "TASKMASTER_NOT_READY_MAX_AGE": "0.3"}))
    h.worker.start()
    try:
        job = {"type": "email.send", "id": "never-1", "data": {"to": "a@example.com", "template": "nowhere"}}
        dead = submit_and_wait(h, redis_client, job, "job.dead")
    finally:
        h.close()
    assert "email template 'nowhere' does not exist (yet)" in dead["error"]
    assert "still not ready" in dead["error"]


def test_an_undefined_variable_fails_the_email_at_once_naming_it(
    harness: Harness, redis_client: redis.Redis, store: TemplateStore
) -> None:
    """A render error of the stored template is permanent: dead-lettered without retries, no file."""
    store.add_version("reminder", "Due: {{ task.title }}", None, "{{ task.title }} is due {{ due_at }}")
    data = {"to": "a@example.com", "template": "reminder", "variables": {"task": {"title": "Report"}}}
    job = {"type": "email.send", "id": "r-1", "data": data}
    dead = submit_and_wait(harness, redis_client, job, "job.dead")
    assert dead["retries"] == 0
    assert dead["error"] == "PermanentError: template 'reminder' v1 text, line 1: 'due_at' is undefined"
    assert not list(harness.runtime.settings.outbox_dir.glob("*.eml"))


def test_stored_templates_win_over_builtins(store: TemplateStore) -> None:
    """A stored template of a built-in's name replaces it; other built-ins stay."""
    builtin_system = find_template(store, "system")
    assert builtin_system is not None and builtin_system.builtin
    store.add_version("system", "{{ title }}!", None, "ours")
    found = find_template(store, "system")
    assert found is not None and (found.version, found.text) == (1, "ours")
    assert find_template(store, "nope") is None and find_template(None, "digest") is not None


def test_concurrent_upserts_of_one_name_each_get_a_version(store: TemplateStore) -> None:
    """Upserts racing on one name all land, numbered 1..n without gaps or duplicates."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda n: store.add_version("race", f"v{n}", None, f"text {n}"), range(12)))
    assert sorted(version for version, _ in results) == list(range(1, 13))
    assert [t.version for t in store.versions("race")] == list(range(1, 13))


@pytest.fixture
def cli_env(db_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in db_env.items():
        monkeypatch.setenv(key, value)
    return db_env


def test_preview_prints_subject_and_text_and_writes_html_and_eml(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`templates preview digest --vars JSON` renders the built-in digest; files where asked."""
    import json

    html_out, eml_out = tmp_path / "digest.html", tmp_path / "digest.eml"
    argv = [
        "templates",
        "preview",
        "digest",
        "--vars",
        json.dumps(DIGEST_VARIABLES),
        "--html-out",
        str(html_out),
        "--eml-out",
        str(eml_out),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "Template: built-in template 'digest'\nSubject: Your digest: 4 new notifications\n\n"
    )
    assert "- Tue 14 Jul, 17:05  Call Bob\n" in out
    assert "Eve commented on &lt;Launch plan&gt;" in html_out.read_text()
    message = email.message_from_bytes(eml_out.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "Your digest: 4 new notifications" and message["To"] == "preview@example.com"
    assert "Call Bob" in bodies(message)[0] and "Call Bob" in bodies(message)[1]


def test_preview_reads_stored_templates(
    cli_env: dict[str, str], store: TemplateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """The latest stored version is previewed; its text derived from the HTML when it has none."""
    store.add_version("welcome", "Hi {{ name }}", "<p>old</p>", None)
    store.add_version(
        "welcome", "Welcome, {{ name }}", "<h1>Hello {{ name }}</h1><p>Glad you're here.</p>", None
    )
    assert main(["templates", "preview", "welcome", "--vars", '{"name": "Ada"}']) == 0
    assert capsys.readouterr().out == (
        "Template: template 'welcome' v2\nSubject: Welcome, Ada\n\nHello Ada\n\nGlad you're here.\n"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["nope"], "no template named 'nope': none stored, and none built in (digest, system)"),
        (["system", "--vars", "{oops"], "--vars is not valid JSON"),
        (["system", "--vars", "[1]"], "--vars must be a JSON object"),
        (
            ["system", "--vars", '{"title": "x"}'],
            "built-in template 'system' html, line 11: 'message' is undefined",
        ),
    ],
)
def test_preview_failures_exit_1_with_the_reason(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    error: str,
) -> None:
    """An unknown template, bad variables or a render error: exit status 1 and what went wrong."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as caught:
        main(["templates", "preview", *argv])
    assert caught.value.code == 1
    assert error in capsys.readouterr().err


def test_preview_exits_3_when_the_database_cannot_be_reached(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that refuses connections is exit status 3, with the driver's reason."""
    for key, value in {**env, "TASKMASTER_DATABASE_URL": "postgresql://nobody:pw@127.0.0.1:1/x"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as caught:
        main(["templates", "preview", "system"])
    assert caught.value.code == 3
    err = capsys.readouterr().err
    assert "the database could not be reached: OperationalError" in err and "pw" not in err


def test_preview_uses_builtins_before_any_database_exists(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the embedded defaults before the first start, built-ins preview and no SQLite file appears."""
    (Path(env["TASKMASTER_DATA_DIR"]) / "taskmaster.db").unlink()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    variables = '{"title": "Hello", "message": "Hi there."}'
    assert main(["templates", "preview", "system", "--vars", variables]) == 0
    assert "Subject: Hello" in capsys.readouterr().out
    assert not (Path(env["TASKMASTER_DATA_DIR"]) / "taskmaster.db").exists()


def test_the_latest_version_is_read_once_per_process_until_another_is_stored(
    db_url: str, db_env: dict[str, str], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emails of one template query the database once; a stored version is used at once after."""
    queries: list[str] = []
    real_latest = TemplateStore.latest

    def counting_latest(self: TemplateStore, name: str) -> Any:
        queries.append(name)
        return real_latest(self, name)

    monkeypatch.setattr(TemplateStore, "latest", counting_latest)
    engine = make_engine(db_url)
    store = TemplateStore(engine)
    store.add_version("digest", "v1", None, "one")
    cache = template_store.LatestTemplates(redis_client, "taskmaster:templates:token")
    cache.changed()
    assert [cache.get(engine, "digest").subject for _ in range(5)] == ["v1"] * 5  # type: ignore[union-attr]
    assert queries == ["digest"]
    # When a new version is stored (template.upsert replaces the token after storing)
    store.add_version("digest", "v2", None, "two")
    cache.changed()
    # Then the next lookup reads it
    assert cache.get(engine, "digest").subject == "v2"  # type: ignore[union-attr]
    assert queries == ["digest", "digest"]
    # And a Redis that lost the token gets a new one: the cache is read afresh once
    redis_client.delete("taskmaster:templates:token")
    cache.get(engine, "digest")
    cache.get(engine, "digest")
    assert len(queries) == 3
    engine.dispose()
