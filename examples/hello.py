"""The smallest asyncflow program: three steps, one run."""

from __future__ import annotations

import anyio

from asyncflow import Engine, Flow

flow = Flow("hello")


@flow.step
async def ingest(text: str) -> list[str]:
    return text.split()


@flow.step
async def shout(ingest: list[str]) -> list[str]:
    return [w.upper() for w in ingest]


@flow.step
async def count(ingest: list[str]) -> int:
    return len(ingest)


@flow.step
async def summarize(shout: list[str], count: int) -> str:
    return f"{count} words: {' '.join(shout)}"


async def main() -> None:
    async with Engine() as engine:
        result = await engine.run(flow, text="hello reliable async world")
    result.raise_for_status()
    print(result.outputs["summarize"])


if __name__ == "__main__":
    anyio.run(main)
