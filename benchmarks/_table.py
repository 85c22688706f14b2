"""Markdown result tables shared by the benchmark scripts."""
from __future__ import annotations

from pathlib import Path


def publish(rows: list[str], title: str, out: Path) -> None:
    """Write the table under ``title`` to ``out`` (benchmarks/results/*.md) and print it."""
    table = "\n".join(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\n{table}\n")
    print(table)
