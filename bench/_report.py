"""Shared helper for benchmark scripts: print a table and write it into docs/benchmarks.md.

Each benchmark owns one section of ``docs/benchmarks.md``, delimited by HTML comment markers,
so scripts can be re-run independently without clobbering each other's results.
"""

from __future__ import annotations

import math
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every table below was written by the script named under it; re-run that command to "
    "refresh it. Timings come from a shared 2-core machine and are noisy: compare ratios "
    "measured in the same run, not absolute numbers across runs. The machines also differ "
    'from session to session: each section carries a "Machine yardstick" line (the same '
    "fixed Python and NumPy work timed on that machine), so two runs are comparable only "
    "together with their yardsticks.\n"
)


YARDSTICK_REPS = 5
"""Runs of each yardstick workload; the fastest counts (the least disturbed by other work)."""


def _python_work() -> float:
    """A fixed pure-Python workload (dict and float arithmetic, like the per-account code)."""
    acc: dict[int, float] = {}
    for k in range(200_000):
        acc[k % 97] = acc.get(k % 97, 0.0) + math.sqrt(k) * 0.5
    return sum(acc.values())


def _numpy_work() -> float:
    """A fixed single-threaded NumPy workload (small solves and element-wise passes)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 64))
    spd = a @ a.T + 64.0 * np.eye(64)
    total = 0.0
    for _ in range(300):
        chol = np.linalg.cholesky(spd)
        total += float(np.exp(-np.abs(chol)).sum())
    return total


def machine_yardstick() -> dict[str, float]:
    """Milliseconds of the same fixed work on every run, fastest of :data:`YARDSTICK_REPS`.

    The benchmarks' machines vary ("2 cores" of different speeds): compare a table's times
    across runs only together with this line (a run whose yardstick is twice as fast ran on
    a machine about twice as fast). Returns ``{"python_ms": ..., "numpy_ms": ...}``.
    """
    out: dict[str, float] = {}
    for name, work in (("python_ms", _python_work), ("numpy_ms", _numpy_work)):
        best = math.inf
        for _ in range(YARDSTICK_REPS):
            t0 = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - t0)
        out[name] = best * 1e3
    return out


def yardstick_line() -> str:
    """The "Machine yardstick" line written under every section's run stamp."""
    y = machine_yardstick()
    return (
        f"Machine yardstick: Python {y['python_ms']:.1f} ms, NumPy {y['numpy_ms']:.1f} ms "
        f"(fixed work, fastest of {YARDSTICK_REPS}; `bench/_report.py`: lower is faster)"
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
        f"Python {platform.python_version()}  \n{yardstick_line()}\n\n"
        f"{body}\n<!-- bench:{name}:end -->"
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
