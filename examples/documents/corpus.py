"""A seeded sample corpus: the same few hundred short text documents on every run."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

WORDS = (
    "asynchronous pipeline document enrichment summary checkpoint breaker retry network "
    "service latency outage recovery batch throughput journal durable idempotent request "
    "answer failure budget progress engine workflow schedule dependency output input river "
    "mountain harbour lantern orchard compass meadow glacier canyon archive library signal"
).split()


def write_corpus(folder: Path, count: int, *, seed: int = 42) -> list[Path]:
    """Write ``count`` documents ``doc-0000.txt``... into ``folder``; return their paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = rng.choices(WORDS, k=rng.randint(6, 14))
            sentences.append(" ".join(words).capitalize() + ".")
        path = folder / f"doc-{n:04d}.txt"
        path.write_text(" ".join(sentences) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
