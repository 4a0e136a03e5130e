"""Benchmark of a change: one bench script run alternately on this tree and on an older commit.

Every bench prints a ratio against a baseline measured in the same run, but how close to its baseline a
machine lets the product come still varies with the machine: issue 8 asked that the ratios stay "at or
better than today's" (ingest 1.78x raw COPY, measured once on the machine of that day), and on a 2-core
machine the commit of that day measures 2.2x to 2.9x on the same script. The question the issue asks, "did
this get worse?", is answered here on any machine: REV is checked out in a temporary worktree, this tree's
bench script and ``own_store.py`` are copied into it (both sides measure the same way), and the two run
one after the other PAIRS times, so both see the same neighbours' load. Each run's first ``ratio ...:``
line is the figure (``--figure REGEX`` picks another: its first group); the medians and their quotient (this
tree over REV: below 1 is better) are printed.

    .venv/bin/python bench/against.py REV SCRIPT [ARGS...] [--pairs 5] [--figure REGEX]
    e.g. .venv/bin/python bench/against.py a011735 ingest.py 2000 7
         .venv/bin/python bench/against.py HEAD sync_throughput.py 10000 --plugins zendesk \\
             --figure '10000 records: ratio sync/floor +([0-9.]+)x'
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATIO = r"^ratio[^:]*:\s+([0-9.]+)"


def _run(tree: Path, script: str, args: list[str], figure: re.Pattern[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    found = figure.search(proc.stdout)
    if found is None:  # a bench may exit 1 for a missed target: its figure is still the figure
        sys.exit(f"{script} on {tree} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(found.group(1))


def _package_of(tree: Path) -> str:
    """Where ``hissuno_airflow`` is imported from with ``tree`` first on the path (the check that the older
    side really runs the older code, not this tree's editable install)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([sys.executable, "-c", "import hissuno_airflow; print(hissuno_airflow.__file__)"],
                          cwd=tree, env=env, capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with")
    parser.add_argument("script", help="a script in bench/ (its first 'ratio ...:' line is read)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--figure", default=RATIO,
                        help="a regex whose first group is the figure (default: the first 'ratio ...:' line)")
    opts, rest = parser.parse_known_args()
    base = Path(tempfile.mkdtemp(prefix="hissuno-against-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), opts.rev], check=True)
    try:
        for name in (opts.script, "own_store.py"):
            shutil.copy(REPO / "bench" / name, base / "bench" / name)
        where = _package_of(base)
        if not where.startswith(str(base)):
            sys.exit(f"the older side would import {where}, not the tree of {opts.rev}")
        ours: list[float] = []
        theirs: list[float] = []
        for n in range(opts.pairs):
            # Alternate which side goes first, so neither always runs right after the other's heaviest part.
            order = [(REPO, ours), (base, theirs)] if n % 2 == 0 else [(base, theirs), (REPO, ours)]
            for tree, out in order:
                out.append(_run(tree, opts.script, rest, re.compile(opts.figure, re.M)))
            print(f"pair {n + 1}: this tree {ours[-1]:.2f}, {opts.rev} {theirs[-1]:.2f}", flush=True)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{opts.script} {' '.join(rest)}: median ratio {a:.2f} on this tree, {b:.2f} on {opts.rev}"
              f" ({len(ours)} pairs; load average {os.getloadavg()[0]:.1f})")
        print(f"this tree / {opts.rev}: {a / b:.2f} (at or below 1: no worse)")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(base.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
