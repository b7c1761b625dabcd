"""A thin command line over the public API: run, resume and draw a flow.

::

    asyncflow run  path/to/pipeline.py:flow  path=a.txt retries=3   # inputs as key=value
    asyncflow resume path/to/pipeline.py:flow doc-42
    asyncflow graph path/to/pipeline.py:flow --format mermaid

``TARGET`` is ``module:attribute`` or ``file.py:attribute`` naming a :class:`Flow`. Values of
``key=value`` inputs are read as JSON when they parse (``n=3``, ``tags=["a"]``), else as text.
Exit status: 0 when the run succeeded, 1 when it failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ._engine import DEFAULT_CHECKPOINT_DIR, Engine
from ._errors import AsyncflowError
from ._graph import Flow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._result import RunResult

__all__ = ["main"]


class UsageError(Exception):
    """The command line is wrong; the message says how."""


def load_flow(target: str) -> Flow:
    """Import ``module:attr`` or ``file.py:attr`` and return the Flow it names."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(
            f"{target!r}: give the flow as module:attribute or path/to/file.py:attribute."
        )
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"{where!r} is not a file.")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"Cannot import {where!r}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        sys.path.insert(0, str(path.resolve().parent))
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    flow = getattr(module, attr, None)
    if not isinstance(flow, Flow):
        raise UsageError(f"{target!r} is {type(flow).__name__}, not a Flow.")
    return flow


def parse_inputs(pairs: Sequence[str]) -> dict[str, object]:
    """``key=value`` words to run inputs; values as JSON when they parse, else as text."""
    inputs: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"{pair!r}: give inputs as name=value, e.g. path=a.txt or n=3.")
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def report(result: RunResult) -> dict[str, object]:
    """A JSON-friendly account of a run: status and each step's status, attempts and error."""
    return {
        "run_id": result.run_id,
        "flow": result.flow,
        "status": result.status.value,
        "steps": {
            name: {
                "status": step.status.value,
                "attempts": step.attempts,
                **({"error": f"{type(step.error).__name__}: {step.error}"} if step.error else {}),
            }
            for name, step in result.steps.items()
        },
    }


async def _run(args: argparse.Namespace) -> RunResult:
    flow = load_flow(args.target)
    store = None if args.no_store else args.store
    async with Engine(store=store) as engine:
        if args.command == "resume":
            return await engine.resume(flow, args.run_id)
        inputs = parse_inputs(args.inputs)
        return await engine.run(flow, run_id=args.run_id, **inputs)  # type: ignore[arg-type]


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = argparse.ArgumentParser(prog="asyncflow", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a flow once (resuming its checkpoints, if any)")
    run.add_argument("target", help="module:flow or file.py:flow")
    run.add_argument("inputs", nargs="*", help="run inputs as name=value")
    run.add_argument("--run-id", help="the run id (derived from the inputs when not given)")
    resume = sub.add_parser("resume", help="resume a run with the inputs saved in its manifest")
    resume.add_argument("target", help="module:flow or file.py:flow")
    resume.add_argument("run_id")
    for command in (run, resume):
        command.add_argument("--store", default=DEFAULT_CHECKPOINT_DIR, help="checkpoint directory")
        command.add_argument("--no-store", action="store_true", help="run without checkpoints")
    graph = sub.add_parser("graph", help="draw the flow's steps and dependencies")
    graph.add_argument("target", help="module:flow or file.py:flow")
    graph.add_argument("--format", choices=["text", "mermaid", "dot"], default="text")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncflow`` and ``python -m asyncflow``; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        if args.command == "graph":
            print(load_flow(args.target).draw(args.format))
            return 0
        result = anyio.run(_run, args)
    except (UsageError, AsyncflowError) as exc:
        print(f"asyncflow: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report(result), indent=2))
    return 0 if result.ok else 1
