"""The order pytest-xdist's workers are handed the test modules in (``run_order`` in ``tests/conftest.py``)."""

from __future__ import annotations

from tests.conftest import LONG_FIRST, REPO_ROOT, WAITING_MODULES, run_order


def _modules() -> list[str]:
    return sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "tests").rglob("test_*.py"))


def test_every_module_that_waits_is_one_of_the_suite() -> None:
    # A renamed or moved module would silently fall back to the end of the order, where it idles the cores.
    missing = sorted(set(WAITING_MODULES) - set(_modules()))
    assert not missing, missing


def test_long_modules_come_first_each_followed_by_one_that_waits() -> None:
    modules = _modules()
    order = run_order(modules)
    assert sorted(order) == modules  # every module once

    long = [m for m in order if m.startswith(LONG_FIRST)]
    waiting = [m for m in order if m in WAITING_MODULES]
    assert len(long) > len(waiting)  # the suite has enough long modules to put each waiting one beside
    head = order[: 2 * len(waiting)]
    assert head[0::2] == long[: len(waiting)] and head[1::2] == waiting
    assert order[2 * len(waiting) : len(long) + len(waiting)] == long[len(waiting) :]
    # The long ones by folder: reliability, then integration, then the browser.
    ranks = [next(r for r, folder in enumerate(LONG_FIRST) if m.startswith(folder)) for m in long]
    assert ranks == sorted(ranks)
    # Then everything else, as collected.
    rest = [m for m in modules if m not in long and m not in waiting]
    assert order[len(long) + len(waiting) :] == rest
