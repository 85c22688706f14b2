"""What the benchmark scripts share: timing and the Markdown result table."""
from __future__ import annotations

import time
from pathlib import Path


def publish(rows: list[str], title: str, out: Path) -> None:
    """Write the table under ``title`` to ``out`` (benchmarks/results/*.md) and print it."""
    table = "\n".join(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\n{table}\n")
    print(table)


def best_of(repeats: int, work) -> float:
    """Fastest of a few runs, in seconds: the one least disturbed by other load on a noisy machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)
