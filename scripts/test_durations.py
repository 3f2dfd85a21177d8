"""Write ``tests/durations.json`` (seconds per test module) from the JUnit XML report
the integration tier writes (``test-artifacts/integration.xml``), so that the tier's
workers get the longest modules first (see ``tests/conftest.py``).

    .venv/bin/python scripts/test_durations.py [test-artifacts/integration.xml]
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "durations.json"


def module_seconds(report: Path) -> dict[str, float]:
    """Seconds per test file (setup, call and teardown of each of its tests)."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        while parts and parts[-1][:1].isupper():  # a test class, not the module
            parts.pop()
        path = "/".join(parts) + ".py"
        seconds[path] += float(case.get("time", "0"))
    return {path: round(total, 1) for path, total in sorted(seconds.items())}


def main() -> None:
    report = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "test-artifacts/integration.xml"
    seconds = module_seconds(report)
    OUT.write_text(json.dumps(seconds, indent=1) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(seconds)} modules")


if __name__ == "__main__":
    main()
