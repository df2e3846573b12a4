"""Book-keeping of the bad-input corpus (tests/test_bad_inputs.py): which bad inputs were tried,
per component, and which of them ended with one clear error and nothing changed on disk.

``conftest.py`` prints the tally at the end of a pytest run (``pytest_terminal_summary``).
"""

from __future__ import annotations

from collections import Counter

#: component -> case ids declared in the corpus tables
DECLARED: dict[str, list[str]] = {}
#: (component, case id) of every case that passed: one clear error, files unchanged
PASSED: list[tuple[str, str]] = []


def declare(component: str, ids) -> None:
    DECLARED.setdefault(component, []).extend(ids)


def record(component: str, case: str) -> None:
    PASSED.append((component, case))


def tally() -> dict[str, tuple[int, int]]:
    """component -> (cases declared, cases that ended with one clear error and nothing lost)."""
    ok = Counter(c for c, _ in PASSED)
    return {c: (len(ids), ok.get(c, 0)) for c, ids in DECLARED.items()}
