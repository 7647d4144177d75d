"""The wire contract as JSON Schema files, generated from the models the code validates with.

    python -m reference.contract --out docs/schemas          # write them
    python -m reference.contract --out docs/schemas --check  # exit 1 if they drifted

Files: `message.schema.json` (the request message), `record.schema.json` (the result record),
`notice.schema.json` (a message on the finals channel: the request id), and per action
`actions/<name>.params.schema.json` and `actions/<name>.result.schema.json`. All are JSON
Schema 2020-12. A test fails when the files in the repository differ from what the code says.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from reference.actions import ActionRegistry, NoResult, builtin
from reference.messages import MessageModel, RequestId
from reference.records import RecordModel

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _schema(model: type[BaseModel], mode: Any = "validation") -> dict[str, Any]:
    return {"$schema": DIALECT, **model.model_json_schema(mode=mode)}


def contract_schemas(registry: ActionRegistry | None = None) -> dict[str, dict[str, Any]]:
    """Relative file name -> JSON Schema, for the built-in actions unless told otherwise."""
    registry = registry if registry is not None else builtin()
    notice = TypeAdapter(RequestId).json_schema()
    out: dict[str, dict[str, Any]] = {
        "message.schema.json": _schema(MessageModel),
        "record.schema.json": _schema(RecordModel),
        "notice.schema.json": {"$schema": DIALECT, "title": "FinalNotice",
                               "description": "Published on the finals channel once a "
                                              "request's final record is written: its "
                                              "request id, as plain text.", **notice},
    }
    for action in sorted(registry, key=lambda a: a.name):
        out[f"actions/{action.name}.params.schema.json"] = _schema(action.params)
        if action.result is NoResult:
            result: dict[str, Any] = {"$schema": DIALECT, "title": f"{action.name} result",
                                      "description": "no result: a Success record without "
                                                     "`result`", "type": "null"}
        elif action.result is None:
            result = {"$schema": DIALECT, "title": f"{action.name} result",
                      "description": "any JSON value"}
        else:
            result = _schema(action.result, "serialization")  # type: ignore[arg-type]
        out[f"actions/{action.name}.result.schema.json"] = result
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def drift(out_dir: Path, registry: ActionRegistry | None = None) -> list[str]:
    """The files under `out_dir` that are missing, stale or not generated any more."""
    wanted = {name: render(schema) for name, schema in contract_schemas(registry).items()}
    found = {str(p.relative_to(out_dir)) for p in out_dir.rglob("*.schema.json")}
    problems = [f"stale: {name}" for name, body in wanted.items()
                if (out_dir / name).exists() and (out_dir / name).read_bytes() != body]
    problems += [f"missing: {name}" for name in wanted if not (out_dir / name).exists()]
    problems += [f"not generated: {name}" for name in sorted(found - set(wanted))]
    return problems


def write(out_dir: Path, registry: ActionRegistry | None = None) -> list[Path]:
    written = []
    for name, schema in contract_schemas(registry).items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render(schema))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference.contract",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/schemas"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the files drifted")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(args.out)
        for line in problems:
            print(line)
        return 1 if problems else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
