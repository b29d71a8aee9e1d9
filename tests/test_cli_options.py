"""Every numeric and path option of every command refuses bad values at parsing: exit code 2, one
`Error:` line naming the option, no traceback, nothing written.

The cases are derived from the commands themselves (cli/main.py's registry, groups included), so a
new option is covered the day it is added — and an option left as a bare int/float/path fails
`test_every_numeric_and_path_option_is_validated`.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import pytest
from avtok.cli.main import COMMANDS, cli
from avtok.cli.options import Device, FiniteFloat, FloatList, OutPath
from click.testing import CliRunner

BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "abc", "1e999", ""]


def _commands() -> list[tuple[str, click.Command]]:
    """(command path, command) for every leaf command, e.g. ("tokenizer fit-kmeans", ...)."""
    ctx = click.Context(cli)
    out = []
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", cmd.commands[sub]) for sub in cmd.commands]
        else:
            out.append((name, cmd))
    return out


def _number_is_bad(ptype: click.ParamType, text: str) -> bool:
    """Whether `text` must be refused by this numeric type (0 and -1 only where the range excludes them)."""
    try:
        value = float(text)
    except ValueError:
        return True
    if not math.isfinite(value):
        return True
    if isinstance(ptype, click.IntRange):
        return (ptype.min is not None and value < ptype.min) or (ptype.max is not None and value > ptype.max)
    if isinstance(ptype, FiniteFloat):
        return ptype.min is not None and (value < ptype.min or (ptype.open_min and value == ptype.min))
    return False


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for path, cmd in _commands():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            opt, t = p.opts[0], p.type
            if isinstance(t, (click.IntRange, FiniteFloat)):
                cases += [(path, opt, v) for v in BAD_NUMBERS if _number_is_bad(t, v)]
                cases.append((path, opt, "1.5" if isinstance(t, click.IntRange) else "1,5"))
            elif isinstance(t, FloatList):
                cases += [(path, opt, v) for v in ("0,nan", "1,inf", "abc", "-1", "")]
            elif isinstance(t, OutPath):
                cases += [(path, opt, "{file}/sub/out"), (path, opt, "{file}/out")]
                cases.append((path, opt, "{file}" if t.dir else "{dir}"))
            elif isinstance(t, click.Path):
                cases += [(path, opt, "{missing}"), (path, opt, "{file}/x")]
            elif isinstance(t, Device):
                cases += [(path, opt, v) for v in ("banana", "cuda:99", "cuda:-1", "")]
            elif isinstance(t, click.Choice):
                cases.append((path, opt, "no-such-choice"))
    return cases


CASES = _cases()


def test_the_case_list_covers_every_command():
    assert {c[0] for c in CASES} >= {"manifest", "extract", "tokenizer fit-kmeans", "tokenize", "weights", "train",
                                     "generate", "eval", "demo"}
    assert len(CASES) > 250


def test_every_numeric_and_path_option_is_validated():
    loose = []
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and p.type in (click.INT, click.FLOAT):
                loose.append(f"{path} {p.opts[0]}")
            if isinstance(p, click.Option) and isinstance(p.type, click.Path) and not p.type.exists:
                loose.append(f"{path} {p.opts[0]} (a path that need not exist: use options.OUT_DIR/OUT_FILE)")
    assert loose == [], "options without a validating type (cli/options.py): " + ", ".join(loose)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts")
    (root / "file.txt").write_text("a regular file\n")
    (root / "dir").mkdir()
    return root


@pytest.mark.parametrize("command, option, value", CASES, ids=[f"{c}:{o}={v}" for c, o, v in CASES])
def test_bad_value_is_one_error_line_naming_the_option(place, command, option, value):
    value = value.format(file=place / "file.txt", dir=place / "dir", missing=place / "missing")
    before = sorted(p.name for p in Path(place).rglob("*"))
    res = CliRunner().invoke(cli, [*command.split(), f"{option}={value}"])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in Path(place).rglob("*")) == before


def test_defaults_and_ordinary_values_pass(tmp_path):
    """The types refuse only what is bad: every option's own default converts, and so do ordinary values."""
    for path, cmd in _commands():
        ctx = click.Context(cmd)
        for p in cmd.params:
            default = p.get_default(ctx, call=False) if isinstance(p, click.Option) else None
            if default is not None and not p.is_flag and not callable(default) and "UNSET" not in str(default):
                assert p.type.convert(str(default), p, ctx) is not None, (path, p.opts[0])
    from avtok.cli.options import NON_NEGATIVE, OUT_DIR, OUT_FILE, POSITIVE

    assert NON_NEGATIVE.convert("0", None, None) == 0.0 and POSITIVE.convert("1e-4", None, None) == 1e-4
    assert Device().convert("CPU", None, None) == "cpu" and Device(extra=("auto",)).convert("auto", None, None) == "auto"
    assert OUT_DIR.convert(str(tmp_path / "new" / "deeper"), None, None) == str(tmp_path / "new" / "deeper")
    assert OUT_DIR.convert(str(tmp_path), None, None) == str(tmp_path)
    assert OUT_FILE.convert(str(tmp_path / "a" / "b.csv"), None, None) == str(tmp_path / "a" / "b.csv")
    assert not (tmp_path / "new").exists() and not (tmp_path / "a").exists()  # checking creates nothing
    import torch

    if torch.cuda.is_available():
        assert Device().convert("cuda:0", None, None) == "cuda:0"
        with pytest.raises(click.BadParameter, match="torch sees"):
            Device().convert(f"cuda:{torch.cuda.device_count()}", None, None)
    else:
        with pytest.raises(click.BadParameter, match="no CUDA device"):
            Device().convert("cuda", None, None)


def test_sampler_choices_are_the_samplers() -> None:
    from avtok.cli.options import CFG_SCHEDULE, CONFIDENCE, JOINT_ORDER, TOP_P
    from avtok.model.sampler import CFG_SCHEDULES, CONFIDENCES, JOINT_ORDERS

    assert tuple(JOINT_ORDER.choices) == JOINT_ORDERS
    assert tuple(CONFIDENCE.choices) == CONFIDENCES
    assert tuple(CFG_SCHEDULE.choices) == CFG_SCHEDULES
    assert TOP_P.convert("1", None, None) == 1.0 and TOP_P.convert("0.7", None, None) == 0.7
