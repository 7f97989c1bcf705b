"""Helpers every room needs, importing nothing of the project: atomic writes, JSON Lines, directory
swaps, figure saving, folder locks, model fingerprints, the CLI wrapper, and stage configs as
dataclasses (flags, YAML and JSON derived from one definition).

Atomic means written aside, then renamed into place: a reader never sees a half-written file and a
failed write leaves the old one. Environment faults (disk full, permissions, read-only file system)
end a command with one line that says what to fix (`run_main`); SPO_TRACEBACK=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import types
import typing
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

# 1. Files


@contextmanager
def atomic_file(path: Path):
    """Yield a temporary path beside `path` to write; on success it replaces `path`, on any failure it
    is removed and the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this writer's own: jobs on other processes or nodes may write the same file at once
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(3).hex()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:  # disk full, killed, ...
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(tmp)  # a failed write() names no file: say which one
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (parents created)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj, trailing_newline: bool = False) -> None:
    """`obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2) + ("\n" if trailing_newline else ""))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file; a bad line raises an error naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
    return rows


def replace_dir(partial: Path, final: Path) -> Path:
    """Swap a fully written folder `partial` into place as `final`. The old one is set aside as
    `<final>.old` until the new one is in place, so one of the two always exists."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_figure(fig, out: Path, dpi: int = 110) -> Path:
    """A matplotlib figure as an image file (format from the suffix), atomically."""
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip("."))
    return out


def digest(*parts) -> str:
    """A short key of JSON-able parts (any key order)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def fingerprint(model: str) -> list:
    """Name plus, for a local checkpoint, the weights' size and mtime: a retrained checkpoint at the
    same path does not reuse stale cached results."""
    weights = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    return [model] + [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights]


# 2. Commands

ENVIRONMENT_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file-size limit was hit",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
}


def run_main(main: Callable[[], object], resume_hint: str = "") -> None:
    """Call `main`; a disk, permission or interrupt fault exits with one line (status 1, or 130 on Ctrl-C)."""
    hint = f"; {resume_hint}" if resume_hint else ""
    try:
        main()
    except KeyboardInterrupt:
        print(f"\ninterrupted{hint}", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in ENVIRONMENT_FAULTS or os.environ.get("SPO_TRACEBACK"):
            raise
        where = f" on {e.filename}" if e.filename else ""
        print(
            f"error: {ENVIRONMENT_FAULTS[e.errno]}{where} ({e.strerror}). Free space or fix permissions, or "
            f"choose another output folder; files written before are intact{hint}.",
            file=sys.stderr,
        )
        sys.exit(1)


@contextmanager
def exclusive(*folders: Path, by: str):
    """Hold `<folder>/.lock` (flock) of each folder for the block, on behalf of command `by`. If another
    process holds one, exit with a message naming that process. The lock goes with its process, so a
    killed run never leaves a stale one."""
    fds: list[int] = []
    try:
        for folder in dict.fromkeys(f.resolve() for f in folders):  # the same folder twice is locked once
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise SystemExit(
                    f"{by}: {folder} is in use by {holder}; wait for it to finish, or choose another folder"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{by} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        for fd in fds:
            os.close(fd)


# 3. Stage configs: a dataclass per stage is the one source of its defaults, flags, YAML keys and docs.


def option(default=dataclasses.MISSING, help: str = "", **metadata):
    """A config field with its help text (TRL's `field(metadata={"help": ...})`); list and dict
    defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(
            default_factory=lambda: type(value)(value), metadata={"help": help, **metadata}
        )
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


class ConfigError(ValueError):
    """A config value or key that does not fit its dataclass; the message names where and what."""


def _base_type(kind):
    """(type without None, None allowed?) of a field annotation such as `int | None`."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def coerce(kind, value, where: str):
    """`value` (from YAML, JSON or a flag) as the field type `kind`, or a ConfigError naming `where`."""
    base, nullable = _base_type(kind)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: needs a value, got null")
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list or comma-separated text, got {value!r}")
        inner = typing.get_args(base)[0]
        return origin(coerce(inner, v.strip() if isinstance(v, str) else v, where) for v in items if v != "")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if base in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            # YAML 1.1 reads 1e-5 (no dot) as text: a number written as text is still a number
            number = base(value) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(
                f"{where}: expected {'an integer' if base is int else 'a number'}, got {value!r}"
            ) from None
        if base is int and not (isinstance(number, int) or float(number).is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return base(number)
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value  # free-form (e.g. a list of dicts)


def config_fields(cls) -> dict[str, tuple[dataclasses.Field, object]]:
    """name → (field, resolved type) of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def typed_values(cls, values: dict, source: str) -> dict:
    """`values` (keys with dashes or underscores) converted to `cls`'s field types; an unknown key or a
    wrong type is a ConfigError naming `source` and the key."""
    fields = config_fields(cls)
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(fields)}")
        out[name] = coerce(fields[name][1], value, f"{source}: key {key!r}")
    return out


def read_config_file(path: Path) -> dict:
    """A YAML or JSON mapping of key: value, or a ConfigError naming the file."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    return values


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default_text(f: dataclasses.Field) -> str:
    if _required(f):
        return "required"
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if value is None:
        return "default: unset"
    if isinstance(value, (list, tuple)):
        return f"default {','.join(map(str, value))}"
    return f"default {value}"


def add_flags(
    ap: argparse._ActionsContainer, cls, exclude: tuple[str, ...] = (), show_defaults: bool = True
) -> None:
    """One --flag per field of `cls` (default None: unset, so the dataclass default applies), with the
    field's help text. Values are parsed by `coerce`, so a flag and a YAML key take the same forms.
    Field metadata may set `flag` (another flag name), `nargs` (list fields: space-separated values),
    `choices` and `metavar`."""
    for name, (f, kind) in config_fields(cls).items():
        if name in exclude:
            continue
        text = f.metadata.get("help", "")
        if show_defaults:
            text = f"{text} ({_default_text(f)})".strip()
        flag = f.metadata.get("flag") or f"--{name.replace('_', '-')}"
        base, _ = _base_type(kind)
        if base is bool:
            ap.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        nargs = f.metadata.get("nargs")
        # with nargs, argparse collects the values and each one is parsed as the list's item type
        item_kind = typing.get_args(base)[0] if nargs else kind

        def parse(text_value: str, kind=item_kind, flag=flag):
            try:
                return coerce(kind, text_value, flag)
            except ConfigError as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        parse.__name__ = getattr(_base_type(item_kind)[0], "__name__", "value")  # argparse names it in errors
        choices = f.metadata.get("choices")
        metavar = "{" + ",".join(choices) + "}" if choices else f.metadata.get("metavar")
        ap.add_argument(flag, dest=name, type=parse, nargs=nargs, default=None, help=text, metavar=metavar)


def config_parser(cls, prog: str, description: str | None, exclude: tuple[str, ...] = ()):
    """An argument parser with `--config FILE` and one flag per field of `cls` (see add_flags)."""
    ap = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, help="YAML or JSON file of the fields below; flags override it")
    add_flags(ap, cls, exclude=exclude)
    return ap


def config_from_args(cls, args: dict, exclude: tuple[str, ...] = ()):
    """A `cls` from the `--config` file in `args` (parsed flags as a dict; typed, unknown keys refused)
    with the flags given on top; required fields and choices checked. Errors are ConfigErrors."""
    path = args.get("config")
    values = typed_values(cls, read_config_file(path), str(path)) if path else {}
    fields = config_fields(cls)
    values |= {n: args[n] for n in fields if n not in exclude and args.get(n) is not None}
    if missing := [n for n, (f, _) in fields.items() if _required(f) and n not in values]:
        raise ConfigError(f"missing: {', '.join('--' + m.replace('_', '-') for m in missing)}")
    cfg = cls(**values)
    check_choices(cfg)
    return cfg


def check_choices(cfg) -> None:
    """Refuse a field value outside its `choices` metadata, naming the field and the valid values."""
    for name, (f, _) in config_fields(type(cfg)).items():
        choices, value = f.metadata.get("choices"), getattr(cfg, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        if choices and value is not None and (bad := [v for v in values if v not in choices]):
            raise ConfigError(f"{name}: unknown value {bad[0]!r}; valid: {', '.join(choices)}")


def config_json(cfg) -> dict:
    """A config dataclass as a JSON-ready dict (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
