"""Shared helper for benchmark scripts: print a table and write it into docs/benchmarks.md.

Each benchmark owns one section of ``docs/benchmarks.md``, delimited by HTML comment markers,
so scripts can be re-run independently without clobbering each other's results.
"""

from __future__ import annotations

import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every table below was written by the script named under it; re-run that command to "
    "refresh it. Timings come from a shared 2-core machine and are noisy: compare ratios "
    "measured in the same run, not absolute numbers across runs.\n"
)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """Render ``rows`` as a GitHub markdown table."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, command: str | None = None) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md and print ``body``.

    Parameters
    ----------
    name
        Stable section key, e.g. ``"analyze"``.
    title
        Heading shown in the document.
    body
        Markdown (usually tables) to store.
    command
        The command that produced it; defaults to the current ``sys.argv``.
    """
    print(body)
    cmd = command or "python " + " ".join(sys.argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name}:start -->\n## {title}\n\n"
        f"Command: `{cmd}`  \nRun: {stamp} on {platform.machine()}, "
        f"Python {platform.python_version()}\n\n{body}\n<!-- bench:{name}:end -->"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n\n" + section + "\n")
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
