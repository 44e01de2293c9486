"""`mersweep`: one entry point whose subcommands reach the sweep, the UI and the analyses.

Fast: help and bad input answer before anything heavy starts. `mersweep ui` on a finished sweep
(MLflow's UI over HTTP) is in tests/test_cli_display.py, with the sweep it opens.
"""

from __future__ import annotations

import argparse
import importlib
import tomllib

import pytest

from mer_core.cli_util import guarded_main
from mer_core.errors import UserInputError
from mer_core.subcommands import command_parser
from sweeps import cli
from sweeps.commands import ui
from sweeps.resume.state import SweepState, write_state
from tests.sweep_helpers import ROOT, run_program

# Every name a user may type, and the module that must answer it.
NAMES = {
    "run": "sweeps.commands.run",
    "ui": "sweeps.commands.ui",
    "compare": "analysis.compare",
    "report": "analysis.report",
    "export": "analysis.export",
    "export-best": "analysis.export",
    "fit-voting": "analysis.fit_voting",
}


def test_the_console_script_is_this_command():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["mersweep"].partition(":")
    assert getattr(importlib.import_module(module), func) is cli.entry


def test_top_level_help_lists_every_command():
    proc = run_program(["-m", "sweeps"], ["--help"], ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m sweeps")
    for name in ("run", "ui", "compare", "report", "export-best", "fit-voting"):
        assert f"\n  {name} " in proc.stdout, name
    assert "(also: export)" in proc.stdout


@pytest.mark.parametrize("name", list(NAMES))
def test_each_command_answers_help_with_its_own_options(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert out.startswith(f"usage: mersweep {name} ")
    assert "--verbose" in out  # every command takes it
    module = importlib.import_module(NAMES[name])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # the options of the module that answered are the ones shown
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in out, (name, flag)


def test_an_unknown_command_is_one_line_and_exit_2(capsys):
    assert guarded_main(cli.main, ["sweep", "x.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: mersweep: argument COMMAND: invalid choice: 'sweep'"), err
    assert "'run'" in err[0] and "'ui'" in err[0]


def test_no_command_is_one_line_and_exit_2(capsys):
    assert guarded_main(cli.main, []) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: mersweep: the following arguments are required: COMMAND")


def test_a_bad_option_of_a_command_names_the_command(capsys):
    assert guarded_main(cli.main, ["report", "--no-such-flag"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: mersweep report: unrecognized arguments: --no-such-flag"), err


def test_mersweep_run_and_run_sweep_py_are_the_same_command(tmp_path):
    """The same bad input through both: the same one-line error, exit 2, nothing written."""
    outs = [
        run_program(program, [*args, "missing.yaml"], tmp_path, timeout=120)
        for program, args in ((["-m", "sweeps"], ["run"]), ([str(ROOT / "run_sweep.py")], []))
    ]
    for proc in outs:
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "missing.yaml" in proc.stderr, proc.stderr
    assert outs[0].stderr == outs[1].stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_python_m_analysis_keeps_its_names_and_gains_the_alias():
    for name in ("export-best", "export"):
        proc = run_program(["-m", "analysis"], [name, "--help"], ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: python -m analysis {name} ") and "--sweep-dir" in proc.stdout


# --- `mersweep ui`: bad input, before any server starts -----------------------------------------


def _ui_args(*argv: str) -> argparse.Namespace:
    return command_parser("mersweep ui", "", ui).parse_args(list(argv))


def _sweep_folder(tmp_path, uri: str, name: str = "s1"):
    folder = tmp_path / "runs" / name
    write_state(folder, SweepState(name, name, "0" * 32, uri, "name: s1\n"))
    return folder


def test_ui_of_a_folder_without_a_sweep(tmp_path):
    with pytest.raises(UserInputError, match=r"^RUNS_DIR: no sweep at .*missing mersweep_state\.json.*runs/quickstart"):
        ui.run(_ui_args(str(tmp_path)))


def test_ui_of_the_runs_folder_names_the_sweeps_in_it(tmp_path):
    _sweep_folder(tmp_path, "sqlite:///x.db", "a")
    _sweep_folder(tmp_path, "sqlite:///x.db", "b")
    with pytest.raises(
        UserInputError, match=r"^RUNS_DIR: .* is a folder of sweeps; expected one of .*runs/a, .*runs/b$"
    ):
        ui.run(_ui_args(str(tmp_path / "runs")))


def test_ui_asks_for_credentials_the_folder_does_not_keep(tmp_path):
    folder = _sweep_folder(tmp_path, "postgresql://***@db-host/mlflow")
    with pytest.raises(UserInputError, match=r"^--tracking-uri: .*without the credentials.*pass the full URI"):
        ui.run(_ui_args(str(folder)))


def test_ui_refuses_a_port_out_of_range(tmp_path):
    folder = _sweep_folder(tmp_path, "sqlite:///x.db")
    with pytest.raises(UserInputError, match=r"^--port: expected 0 \(a free port\) to 65535; got 70000$"):
        ui.run(_ui_args(str(folder), "--port", "70000"))


def test_ui_of_a_sweep_on_a_tracking_server_prints_its_address(tmp_path, capsys):
    """A tracking server is the UI already: nothing is started (the address answers nothing here)."""
    folder = _sweep_folder(tmp_path, "http://127.0.0.1:9/")
    assert ui.run(_ui_args(str(folder))) == 0
    out = capsys.readouterr().out
    assert "MLflow UI:        http://127.0.0.1:9\n" in out and "Ctrl-C" not in out


def test_ui_bad_input_through_the_cli_is_one_line_and_exit_2(tmp_path):
    proc = run_program(["-m", "sweeps"], ["ui", str(tmp_path / "nowhere")], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: RUNS_DIR: no sweep at "), proc.stderr


def test_local_store_uris_become_absolute_for_the_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui._store_uri("sqlite:///mlflow.db", explicit=False) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui._store_uri("sqlite:////abs/m.db", explicit=False) == "sqlite:////abs/m.db"
    assert ui._store_uri("mlruns", explicit=False) == (tmp_path / "mlruns").as_uri()
    assert ui._store_uri("postgresql://u:pw@h/db", explicit=True) == "postgresql://u:pw@h/db"
