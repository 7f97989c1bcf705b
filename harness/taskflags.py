"""Per-task command-line options, derived from the task registry: a new task gets its flags (and preset
keys) without a line here. Each task gets an item count `--<task><suffix> N` and one flag per entry of
its OPTIONS, `--<task>-<option>`; the stage configs hold them as `sizes` and `options` dicts."""

from __future__ import annotations

import argparse

from common import ConfigError, coerce
from tasks import TASKS
from tasks.base import check_option, option_spec, resolve_options

# the stage-config fields that hold per-task settings (task → items, task → options)
TASK_FIELDS = ("sizes", "options")


def _dest(name: str) -> str:
    return name.replace("-", "_")


def add_size_flags(ap: argparse._ActionsContainer, suffix: str, what: str, default: str | None) -> None:
    """`--<task><suffix> N` for every task ("<what>", default: the task's attribute `default`)."""
    for task in TASKS.values():
        shown = f" (default {getattr(task, default)})" if default else ""
        ap.add_argument(
            f"--{task.NAME}{suffix}",
            dest=_dest(task.NAME + suffix),
            type=int,
            metavar="N",
            help=f"{task.TITLE}: {what}{shown}",
        )


def add_option_flags(ap: argparse._ActionsContainer) -> None:
    """`--<task>-<option>` for every task option (default: unset, the task's own default applies); an
    option with declared choices takes only those."""
    for task in TASKS.values():
        for option in task.OPTIONS:
            default, help_text, choices = option_spec(task, option)
            flag = f"--{task.NAME}-{option.replace('_', '-')}"
            dest = _dest(f"{task.NAME}_{option}")
            text = f"{task.TITLE}: {help_text} (default {default})"
            if isinstance(default, bool):
                ap.add_argument(
                    flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text
                )
            else:
                ap.add_argument(flag, dest=dest, type=type(default), choices=choices, default=None, help=text)


def sizes_given(values: dict, suffix: str) -> dict[str, int]:
    """task → item count, for the tasks whose `--<task><suffix>` is set in `values` (namespace vars)."""
    found = {}
    for name in TASKS:
        value = values.get(_dest(name + suffix))
        if value is not None:
            found[name] = coerce(int, value, f"--{name}{suffix}")
    return found


def options_given(values: dict) -> dict[str, dict]:
    """task → {option: value} for the task options set in `values`, typed as the option's default; a value
    outside the option's choices is a ConfigError (a preset's value never meets argparse's check)."""
    found: dict[str, dict] = {}
    for name, task in TASKS.items():
        for option in task.OPTIONS:
            value = values.get(_dest(f"{name}_{option}"))
            if value is not None:
                where = f"--{name}-{option.replace('_', '-')}"
                value = coerce(type(option_spec(task, option)[0]), value, where)
                try:
                    check_option(task, option, value)
                except ValueError as e:
                    raise ConfigError(f"{where}: {e}") from None
                found.setdefault(name, {})[option] = value
    return found


def merge_options(*layers: dict[str, dict]) -> dict[str, dict]:
    """Task options of several layers (later ones win, option by option)."""
    merged: dict[str, dict] = {}
    for layer in layers:
        for name, opts in layer.items():
            merged.setdefault(name, {}).update(opts)
    return merged


def check_tasks(names) -> None:
    """Refuse an unknown task name, naming the valid ones."""
    if bad := [n for n in names if n not in TASKS]:
        raise ConfigError(f"unknown task(s) {', '.join(bad)}; valid: {', '.join(TASKS)}")


def add_task_flags(ap: argparse.ArgumentParser, what: str, default: str) -> None:
    """A stage's per-task flags: `--<task> N` (<what>, default the task's attribute `default`) and the
    task options."""
    group = ap.add_argument_group("per task")
    add_size_flags(group, "", what, default)
    add_option_flags(group)


def fill_task_settings(cfg, args: dict, default_sizes: dict[str, int]) -> None:
    """Set a stage config's `sizes` (defaults < the config's < flags) and `options` (config < flags)."""
    cfg.sizes = default_sizes | cfg.sizes | sizes_given(args, "")
    cfg.options = merge_options(cfg.options, options_given(args))
    # refuse a config's unknown option or value now, before any model is loaded
    for name, opts in cfg.options.items():
        if name in TASKS:
            try:
                resolve_options(TASKS[name], opts)
            except ValueError as e:
                raise ConfigError(str(e)) from None
