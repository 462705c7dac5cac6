"""After a fuzz run with CAPTIONLENS_FUZZ_STATS naming a file (`make fuzz`), writes there, and prints, the table
of inputs per reader (each test module's `READER`) and outcome (`harness.STATS`), then the same per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from harness import EXAMPLES, STATS

OUTCOMES = ("loaded", "refused", "broke the contract")


def pytest_sessionfinish(session, exitstatus) -> None:
    target = os.environ.get("CAPTIONLENS_FUZZ_STATS")
    if not target or not STATS:
        return
    columns = [*OUTCOMES, *sorted({outcome for _, outcome in STATS} - set(OUTCOMES))]
    by_test = {test: [STATS[(test, outcome)] for outcome in columns] for test in sorted({t for t, _ in STATS})}
    by_reader: dict[str, list[int]] = {}
    for test, counts in by_test.items():
        module = sys.modules.get(Path(test.split("::")[0]).stem)
        reader = getattr(module, "READER", test.split("::")[0])
        by_reader[reader] = [a + b for a, b in zip(by_reader.get(reader, [0] * len(columns)), counts)]
    total = [sum(counts[i] for counts in by_test.values()) for i in range(len(columns))]
    lines = [f"{EXAMPLES} examples per fuzz test; reader calls per reader and outcome (regression tests included):",
             *_table("reader", by_reader, columns, total), "", "The same per test:",
             *_table("test", {t.removeprefix("tests/fuzz/"): c for t, c in by_test.items()}, columns, total)]
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n" + "\n".join(lines))


def _table(first: str, rows: dict[str, list[int]], columns: list[str], total: list[int]) -> list[str]:
    head = [f"| {first} | inputs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    body = [f"| {name} | {sum(counts)} | " + " | ".join(map(str, counts)) + " |" for name, counts in rows.items()]
    return ["", *head, *body, f"| all | {sum(total)} | " + " | ".join(map(str, total)) + " |"]
