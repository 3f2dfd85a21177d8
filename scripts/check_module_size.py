"""Fail when a source module grows past the size we allow (keeps modules small)."""

import sys
from pathlib import Path

LIMIT = 800


def main() -> int:
    too_big = []
    for path in sorted(Path("src").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > LIMIT:
            too_big.append(f"{path}: {lines} lines (limit {LIMIT})")
    for line in too_big:
        print(line, file=sys.stderr)
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
