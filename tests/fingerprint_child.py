"""Child process of test_identity: a flow whose steps have no plain source to fingerprint.

    python tests/fingerprint_child.py fingerprints
    python tests/fingerprint_child.py run STORE_DIR
    python tests/fingerprint_child.py resume STORE_DIR

``fingerprints`` prints each step's code fingerprint and the flow's fingerprint as JSON;
``run`` runs the flow as run ``r1`` with a FileStore and ``resume`` resumes it, both printing
each step's status as JSON. The parent starts it under different ``PYTHONHASHSEED`` values.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import anyio

from asyncflow import Engine, FileStore, Flow
from asyncflow._plan import compile_plan  # the flow fingerprint has no public name

flow = Flow("fingerprints")


async def score(word: str, weights: dict[str, float], stop: frozenset[str]) -> float:
    return 0.0 if word in stop else weights.get(word, 1.0)


# A partial step: the function plus bound values whose repr follows the hash seed (sets of
# text) or would show an address (the function itself).
flow.step(name="scored")(
    functools.partial(
        score,
        weights={"alpha": 0.5, "beta": 2.0},
        stop=frozenset({"the", "a", "an", "of", "to", "in"}),
    )
)

# Code without source: a step compiled from a string, whose set literal becomes a frozenset
# constant and whose comprehension is a nested code object.
GENERATED = """
async def tagged(word: str, scored: float) -> list[str]:
    tags = [t for t in ("noun", "verb", "stop") if word in {"alpha", "beta", "gamma", "delta"}]
    return tags + (["high"] if scored > 1.5 else [])
"""
namespace: dict[str, Any] = {}
exec(compile(GENERATED, "<generated>", "exec"), namespace)
flow.step(namespace["tagged"])


async def main(command: str, store_dir: str) -> None:
    async with Engine(store=FileStore(store_dir)) as engine:
        if command == "run":
            result = await engine.run(flow, run_id="r1", word="beta")
        else:
            result = await engine.resume(flow, "r1")
    result.raise_for_status()
    print(json.dumps({name: step.status.value for name, step in result.steps.items()}))


if __name__ == "__main__":
    if sys.argv[1] == "fingerprints":
        prints = {name: step.code_fingerprint for name, step in flow.steps.items()}
        print(json.dumps({**prints, "flow": compile_plan(flow).fingerprint}))
    else:
        anyio.run(main, sys.argv[1], sys.argv[2])
