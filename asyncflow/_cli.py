"""A thin command line over the public API: run, resume and draw a flow.

::

    asyncflow run  path/to/pipeline.py:flow  path=a.txt retries=3   # inputs as key=value
    asyncflow resume path/to/pipeline.py:flow doc-42
    asyncflow graph path/to/pipeline.py:flow --format mermaid

``TARGET`` is a :class:`~asyncflow.FlowRef`: ``module:attribute`` or ``file.py:attribute``
naming a :class:`Flow`. Values of
``key=value`` inputs are read as JSON when they parse (``n=3``, ``tags=["a"]``), else as text.
Exit status: 0 when the run succeeded, 1 when it failed, 2 for bad usage: a malformed target
or input, a module that is missing or fails to import, a flow that is not valid. Every usage
error is one line on stderr, ``asyncflow: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, NoReturn

import anyio

from ._engine import DEFAULT_CHECKPOINT_DIR, Engine
from ._errors import AsyncflowError
from ._plan import RESERVED_INPUTS
from ._ref import FlowRef

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._flow import Flow
    from ._result import RunResult

__all__ = ["main"]

#: How deeply a key=value input may nest lists and objects.
MAX_INPUT_DEPTH = 100


class UsageError(Exception):
    """The command line is wrong; the message says how."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"asyncflow: error: {message} (see {self.prog} --help)\n")


def parse_inputs(pairs: Sequence[str]) -> dict[str, object]:
    """``key=value`` words to run inputs; values as JSON when they parse, else as text.

    Raises:
        UsageError: a word is not ``name=value``, a name is given twice or is an option of the
            run (``run_id``, ``fail_fast``), or a value is nested too deeply.
    """
    inputs: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"{pair!r}: give inputs as name=value, e.g. path=a.txt or n=3.")
        if key in RESERVED_INPUTS:
            option = "--" + key.replace("_", "-")
            raise UsageError(f"{pair!r}: {key} is not a run input; use {option}.")
        if key in inputs:
            raise UsageError(f"Input {key!r} is given twice; give it once.")
        inputs[key] = _value(key, raw)
    return inputs


def _value(key: str, raw: str) -> object:
    too_deep = UsageError(
        f"Input {key!r} is nested more than {MAX_INPUT_DEPTH} levels deep; the command line "
        f"takes flatter values (pass a path to a file for such data)."
    )
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise too_deep from exc
    except ValueError:
        return raw
    # Iteratively: a value just under json's own limit would overflow later recursive code.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_INPUT_DEPTH:
                raise too_deep
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return value


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


async def _run(flow: Flow, args: argparse.Namespace, inputs: dict[str, object]) -> RunResult:
    store = None if args.no_store else args.store
    fail_fast = True if args.fail_fast else None  # None: the engine's default
    async with Engine(store=store) as engine:
        if args.command == "resume":
            return await engine.resume(flow, args.run_id, fail_fast=fail_fast)
        return await engine.run(flow, run_id=args.run_id, fail_fast=fail_fast, **inputs)


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = _Parser(prog="asyncflow", description=__doc__.split("\n\n")[0])
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
        command.add_argument(
            "--fail-fast", action="store_true", help="cancel the rest of the run on a failure"
        )
    graph = sub.add_parser("graph", help="draw the flow's steps and dependencies")
    graph.add_argument("target", help="module:flow or file.py:flow")
    graph.add_argument("--format", choices=["text", "mermaid", "dot"], default="text")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asyncflow`` and ``python -m asyncflow``; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        # Imported and parsed before the loop starts: an import does blocking I/O.
        flow = FlowRef.parse(args.target).load()
        if args.command == "graph":
            print(flow.draw(args.format))
            return 0
        inputs = parse_inputs(args.inputs) if args.command == "run" else {}
        result = anyio.run(_run, flow, args, inputs)
    except (UsageError, AsyncflowError) as exc:
        # One line, whatever the message holds: the documented form of every usage error.
        message = " ".join(line.strip() for line in str(exc).splitlines())
        print(f"asyncflow: error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(report(result), indent=2))
    return 0 if result.ok else 1
