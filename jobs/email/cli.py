"""`taskmaster-worker templates preview`: render an email template without sending anything."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from jobs.email import builtin
from jobs.email.message import build_message, stable_message_id
from jobs.email.models import EmailSend
from jobs.email.template_store import TemplateStore, TemplateStoreError, db_error_text, find_template
from jobs.email.templating import Rendered, RenderError, TemplateSource, render
from worker.cli.common import EXIT_OK, EXIT_UNAVAILABLE, die, settings_or_exit
from worker.db.session import make_engine
from worker.registry import cli_command

EPILOG = """\
examples:
  taskmaster-worker templates preview system --vars '{"title": "Hello", "message": "Hi there."}'
  taskmaster-worker templates preview digest --vars - --html-out digest.html < vars.json
  taskmaster-worker templates preview welcome --vars '{"name": "Ada"}' --eml-out welcome.eml

The latest version stored by template.upsert in the database (TASKMASTER_DATABASE_URL, or the
SQLite file in TASKMASTER_DATA_DIR) is used; without one, the built-in template of that name
(built in: BUILTINS).

exit status:
  0  rendered
  1  no such template, invalid variables, or the template failed to render
  2  invalid configuration
  3  the database could not be reached
"""


@cli_command
def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "templates",
        help="preview email templates",
        description="Email templates: render one as an email would be, without sending it.",
    )
    commands = parser.add_subparsers(dest="templates_command", metavar="COMMAND", required=True)
    preview = commands.add_parser(
        "preview",
        help="print a template's subject and text; write its HTML or the whole message",
        description="Render a template with the given variables: print its subject and text.",
        epilog=EPILOG.replace("BUILTINS", ", ".join(builtin.NAMES)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preview.add_argument("name", help="the template's name")
    preview.add_argument(
        "--vars", default="{}", metavar="JSON", help="the variables, a JSON object (- reads it from stdin)"
    )
    preview.add_argument("--html-out", type=Path, metavar="FILE", help="write the rendered HTML body here")
    preview.add_argument(
        "--eml-out", type=Path, metavar="FILE", help="write the whole message (RFC 5322) here"
    )
    preview.add_argument("--to", default="preview@example.com", help="the recipient shown in the .eml")
    preview.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    variables = _variables(args.vars)
    source = _find(settings.sqlalchemy_url, args.name)
    try:
        rendered = render(source, variables)
    except RenderError as exc:
        die(str(exc))
    print(f"Template: {source.describe()}")
    print(f"Subject: {rendered.subject}")
    print()
    print(rendered.text, end="" if rendered.text.endswith("\n") else "\n")
    if args.html_out is not None:
        if rendered.html is None:
            die(f"{source.describe()} has no HTML body; its text is above")
        _write(args.html_out, rendered.html.encode("utf-8"))
    if args.eml_out is not None:
        _write(args.eml_out, _message_bytes(args.to, settings.email_from, source, rendered))
    return EXIT_OK


def _variables(raw: str) -> dict[str, Any]:
    text = sys.stdin.read() if raw == "-" else raw
    try:
        variables = json.loads(text)
    except json.JSONDecodeError as exc:
        die(f"--vars is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(variables, dict):
        die("--vars must be a JSON object of the template's variables")
    return variables


def _find(url: str, name: str) -> TemplateSource:
    # Imported here: alembic costs every other command of the CLI a quarter second.
    from worker.db import migrate

    try:
        # No schema yet (or no SQLite file, which reading must not create): built-ins only.
        has_schema = migrate.current_revision(url) is not None
    except SQLAlchemyError as exc:
        die(f"the database could not be reached: {db_error_text(exc)}", EXIT_UNAVAILABLE)
    engine = make_engine(url) if has_schema else None
    try:
        source = find_template(TemplateStore(engine) if engine is not None else None, name)
    except TemplateStoreError as exc:
        die(str(exc))
    finally:
        if engine is not None:
            engine.dispose()
    if source is None:
        die(f"no template named {name!r}: none stored, and none built in ({', '.join(builtin.NAMES)})")
    return source


def _message_bytes(to: str, sender: str, source: TemplateSource, rendered: Rendered) -> bytes:
    try:
        email = EmailSend.model_validate(
            {"to": to, "subject": rendered.subject, "text": rendered.text, "html": rendered.html}
        )
    except ValidationError as exc:
        die(f"cannot build the message: {exc.errors(include_url=False)[0]['msg']}")
    message_id = stable_message_id(f"preview:{source.name}:{source.version}")
    return build_message(email, sender=sender, message_id=message_id, date=datetime.now(UTC)).as_bytes()


def _write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror}")
    print(f"wrote {path}", file=sys.stderr)
