"""`taskmaster-worker schema`: the JSON Schema of every job type's data."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli.common import EXIT_OK, settings_or_exit


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schema", help="print the JSON Schema of every job type", description=__doc__
    )
    parser.add_argument("type", nargs="?", help="only this job type")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.registry import load_job_modules

    settings = settings_or_exit()
    schemas = load_job_modules(settings.job_modules).json_schemas()
    if args.type:
        if args.type not in schemas:
            from worker.cli.common import die

            die(f"unknown job type {args.type!r}; known types: {', '.join(schemas)}")
        schemas = {args.type: schemas[args.type]}
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "taskmaster-worker job types",
        "envelope": {
            "type": "object",
            "required": ["type", "data"],
            "properties": {
                "type": {"enum": sorted(schemas)},
                "id": {"type": "string"},
                "data": {"type": "object"},
            },
            "additionalProperties": False,
        },
        "types": schemas,
    }
    print(json.dumps(document, indent=2, sort_keys=True))
    return EXIT_OK
