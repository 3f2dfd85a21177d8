"""Print the figures docs/architecture.md leaves to the code: modules and lines per
package, the largest module of each, the task kinds and their steps, import cycles.

    .venv/bin/python scripts/architecture_facts.py
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def packages() -> None:
    sizes: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for path in sorted((SRC / "nubis").rglob("*.py")):
        if "node_modules" in path.parts or "migrations" in path.parts:
            continue
        rel = path.relative_to(SRC / "nubis")
        parts = rel.parts
        if parts[0] == "services" and len(parts) > 2:
            key = f"services/{parts[1]}"
        elif len(parts) > 1:
            key = parts[0]
        else:
            key = "(top level)"
        sizes[key].append((len(path.read_text().splitlines()), str(rel)))
    print(f"{'package':22} {'modules':>7} {'lines':>6}  largest module")
    for key in sorted(sizes):
        rows = sizes[key]
        lines, largest = max(rows)
        total = sum(n for n, _ in rows)
        print(f"{key:22} {len(rows):7} {total:6}  {largest} ({lines})")


def task_kinds() -> None:
    sys.path.insert(0, str(SRC))
    from nubis.config import Settings
    from nubis.platform import Platform

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        platform = Platform(
            Settings(
                data_dir=d / "data",
                database_url=f"sqlite:///{d / 'n.db'}",
                register_local_host=False,
                build_tiny_image=False,
                task_workers=0,
                collect_metrics=False,
                pool_path=d / "disks",
                console_path=d / "console",
            )
        )
        handlers = platform.engine.handlers
        steps = sum(len(h.steps) for h in handlers.values())
        print(f"task kinds: {len(handlers)}, steps declared: {steps}")


def cycles() -> None:
    graph = grimp.build_graph("nubis")
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & set(modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in index:
            visit(m)
    print(f"modules: {len(modules)}, import cycles: {len(found)}")
    for group in found:
        print("  cycle:", " ".join(sorted(group)))


if __name__ == "__main__":
    packages()
    task_kinds()
    cycles()
