"""House rules the formatter cannot check: no chained conditional expressions, and harness/ names no
task (it iterates the registry tasks.TASKS)."""

import ast
import subprocess
from pathlib import Path

from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def python_files(*folders: str) -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    files = [ROOT / f for f in tracked + untracked if (ROOT / f).is_file()]
    return [f for f in files if not folders or f.relative_to(ROOT).parts[0] in folders]


def chained_conditionals(source: str) -> list[int]:
    """Lines of `a if x else b if y else c` (a conditional expression inside another's branches)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.IfExp)
        and isinstance(node.orelse, ast.IfExp)
        or isinstance(node, ast.IfExp)
        and isinstance(node.body, ast.IfExp)
    ]


def test_the_checker_finds_a_chained_conditional():
    assert chained_conditionals("x = 1 if a else 2 if b else 3\ny = 1 if a else 2\n") == [1]


def test_no_chained_conditional_expressions():
    found = [
        f"{f.relative_to(ROOT)}:{n}" for f in python_files() for n in chained_conditionals(f.read_text())
    ]
    assert not found, "chained conditional expressions (use if/elif or a dict): " + ", ".join(found)


def task_names_in(source: str) -> list[int]:
    """Lines of string constants that are exactly a registered task's name."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in TASKS
    ]


def test_harness_names_no_task():
    found = [
        f"{f.relative_to(ROOT)}:{n}" for f in python_files("harness") for n in task_names_in(f.read_text())
    ]
    assert not found, "harness/ names a task (iterate tasks.TASKS instead): " + ", ".join(found)
