"""The README's pictures, from a real run: `python -m analysis.report.readme_pictures`.

Runs the shipped quick ablation (`sweeps/ablation_quick.yaml`, made smaller with `--set`: 3
variants, 2 seeds, 2 folds, 5 epochs; about 10 minutes on 2 busy cores) against a real
`mlflow server` on 127.0.0.1, then photographs
with headless Chromium what a user opens afterwards:
- `report.png`: the top of the sweep's HTML report (header, ablation table and chart);
- `mlflow_runs.png`: MLflow's training-runs view of the experiment, the sweep's parent run
  expanded to show its trials;
- `mlflow_report.png`: the same report inside MLflow, on the parent run's artifacts page.
The PNGs go to `analysis/report/assets/` (the README links them); everything else lives in a
temporary folder that is removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from analysis.report.browser import Browser, free_port
from mer_core.cli_util import ArgumentParser, exit_cli
from sweeps.commands.servers import ServerGroup
from sweeps.resume.state import SweepState, read_state
from sweeps.tracking.names import REPORT_DIR, REPORT_PAGE
from sweeps.tracking.uri import ui_link

ROOT = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent / "assets"
SPEC = ROOT / "sweeps" / "ablation_quick.yaml"
# The pictures need a real run, not a verdict: 3 of the 5 variants, 2 seeds, 2 folds, 5 epochs.
SMALL = (
    "sweep.ablation.variants={full: {}, no_nee: {nee.enabled: false}, no_self_training: {self_training.rounds: 0}}",
    "sweep.ablation.seeds=[0,1]",
    "sweep.data.folds=2",
    "optim.max_epochs=5",
)
EXPANDER = 'button[data-component-id*="runnamecellrenderer"]'  # the [+] before a parent run's name
CLOSE_ASSISTANT = 'button[aria-label="Close"]'  # MLflow 3's assistant panel would take a third of the view


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m analysis.report.readme_pictures", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(SPEC), help=f"the sweep to run (default: {SPEC.relative_to(ROOT)})")
    parser.add_argument(
        "--set", action="append", default=None, help=f"overrides passed to run_sweep.py (default: {' '.join(SMALL)})"
    )
    parser.add_argument("--out", default=str(ASSETS), help="folder for the PNGs (default: analysis/report/assets/)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="mersweep-pictures-") as tmp,
        ServerGroup(prefix="mersweep-mlflow-") as servers,
    ):
        work = Path(tmp)
        uri = _start_server(servers, work)
        sweep_dir = _run_sweep(work, uri, Path(args.spec), args.set or list(SMALL))
        _photograph(sweep_dir, uri, read_state(sweep_dir), out)
    for png in sorted(out.glob("*.png")):
        print(f"{png} ({png.stat().st_size // 1024} KB)")
    return 0


def _start_server(servers: ServerGroup, work: Path) -> str:
    """`mlflow server` on a sqlite store in `work`, on a free port, healthy; its address.

    Started in `servers`: Ctrl-C (once or twice) or SIGTERM stops it with its workers.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    uri = f"http://127.0.0.1:{port}"
    servers.start("mlflow server", [*cmd, "--workers", "1"], env=env).wait_answering(f"{uri}/health", timeout=180)
    return uri


def _run_sweep(work: Path, uri: str, spec: Path, overrides: list[str]) -> Path:
    """The sweep, run as a user runs it; its runs/<name>/ folder."""
    sets = [arg for value in overrides for arg in ("--set", value)]
    cmd = [sys.executable, str(ROOT / "run_sweep.py"), str(spec), "--tracking-uri", uri, *sets]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    folders = [p for p in (work / "runs").iterdir() if p.is_dir()]
    return folders[0]


def _photograph(sweep_dir: Path, uri: str, state: SweepState, out: Path) -> None:
    experiment = _experiment_id(uri, state.experiment)
    parent = state.parent_run_id
    with Browser(width=1200, height=1250) as browser:
        browser.goto((sweep_dir / REPORT_DIR / REPORT_PAGE).as_uri())
        browser.wait_for("document.body.getAttribute('data-images') === 'ok'", what="the report's images")
        browser.screenshot(out / "report.png")
    with Browser(width=1400, height=800) as browser:
        browser.goto(ui_link(uri, experiment))
        browser.wait_for(f"document.querySelector({json.dumps(EXPANDER)}) !== null", what="the sweep's run")
        _click(browser, CLOSE_ASSISTANT)
        _click(browser, EXPANDER)
        rows = "document.querySelectorAll('.ag-center-cols-container [role=\"row\"]').length > 1"
        browser.wait_for(rows, what="the trials under the sweep's run")
        browser.wait_still(what="the runs view")  # status icons and colours come after the rows
        browser.screenshot(out / "mlflow_runs.png")
        browser.goto(ui_link(uri, experiment, parent, f"{REPORT_DIR}/{REPORT_PAGE}"))
        browser.wait_for("document.querySelector('iframe') !== null", what="the report in MLflow's artifact view")
        _click(browser, CLOSE_ASSISTANT)
        browser.wait_still(what="the report in MLflow")  # the frame renders the report's images
        browser.screenshot(out / "mlflow_report.png")


def _click(browser: Browser, selector: str) -> None:
    """Click every element `selector` finds (none: nothing happens, e.g. a panel already closed)."""
    browser.evaluate(f"document.querySelectorAll({json.dumps(selector)}).forEach(b => b.click())")


def _experiment_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri).get_experiment_by_name(name).experiment_id


def entry() -> None:
    exit_cli(main)


if __name__ == "__main__":
    entry()
