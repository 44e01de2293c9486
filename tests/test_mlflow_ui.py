"""What a user sees of a sweep in MLflow's UI, checked in the UI itself (headless Chromium).

A tiny ablation runs against a real `mlflow server` on 127.0.0.1 (sqlite backend, proxied
artifacts). Then: the experiment opens on MLflow's training-runs view and lists the sweep's parent
run and, expanded, its trials; the parent's report and tables are served over the server's HTTP
API (what the UI's artifact pages fetch); the parent holds a metric per variant and the trials
link back to the report. `.ci/run` installs Chromium (MERSWEEP_REQUIRE_CHROMIUM=1 there: a
missing browser fails instead of skipping).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.report.browser import Browser, chromium_path
from benchmarks.common import sqlite_store
from sweeps.resume.state import SweepState, write_state
from sweeps.tracking.names import UI_TRAINING_QUERY
from sweeps.tracking.uri import ui_link
from tests.pg_helpers import MlflowServer
from tests.sweep_helpers import ROOT, SMALL_DATA, SMALL_SET, children_of, run_program, run_sweep_here, write_sweep

VARIANTS = {"full": {}, "no_nee": {"nee.enabled": False}}
SEEDS = [0, 1]
EXPANDER = 'button[data-component-id*="runnamecellrenderer"]'  # the [+] before a parent run's name


def _require_chromium() -> None:
    if chromium_path() is None:
        if os.environ.get("MERSWEEP_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MERSWEEP_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def ui_sweep(tmp_path_factory, mlflow_template):
    """A 2-variant x 2-seed ablation (2 folds, one self-training round) logged to a live server."""
    folder = tmp_path_factory.mktemp("mlflow_ui")
    server = MlflowServer(sqlite_store(folder / "mlflow.db", template=mlflow_template), folder)
    server.start()
    try:
        spec = write_sweep(
            folder,
            "ui-ablation",
            kind="ablation",
            search_space=None,
            data={**SMALL_DATA, "folds": 2},
            ablation={"reference": "full", "variants": VARIANTS, "seeds": SEEDS},
            resources={"cpu": 1, "gpu": 0, "max_concurrent": 1},  # one trial worker: the UI is what is tested
            set={**SMALL_SET, "optim.max_epochs": 3, "self_training.rounds": 1},
            tracking={"report": True},  # the report on the parent run is what these tests look at
        )
        proc = run_sweep_here([str(spec), "--tracking-uri", server.uri], cwd=folder)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=server.uri)
        parent, children = children_of(client, "ui-ablation")
        yield server.uri, client, parent, children, proc.stderr
    finally:
        server.stop()


def _api(uri: str, endpoint: str, **query: str) -> bytes:
    with urllib.request.urlopen(f"{uri}/{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as resp:
        return resp.read()


@pytest.mark.slow
def test_the_experiment_opens_on_training_runs_and_lists_the_parent_and_its_trials(ui_sweep, tmp_path):
    _require_chromium()
    uri, client, parent, children, _ = ui_sweep
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    names = [c.info.run_name for c in children]
    with Browser(width=1400, height=900) as browser:
        browser.goto(ui_link(uri, exp.experiment_id))
        browser.wait_for(f"document.querySelector({json.dumps(EXPANDER)}) !== null", what="the parent's row")
        text = browser.text()
        assert "Traces" not in text.split("Runs", 1)[0]  # the training-runs view, not the GenAI overview
        assert parent.info.run_name in text.split("Run Name", 1)[1]  # a row of the table, not the breadcrumb
        assert not any(n in text for n in names)  # nested under the parent until it is expanded
        browser.evaluate(f"document.querySelectorAll({json.dumps(EXPANDER)}).forEach(b => b.click())")
        every = " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in names)
        browser.wait_for(every, what="the trials under the parent")
        assert f"{len(children) + 1} matching runs" in browser.text()
        shot = browser.screenshot(tmp_path / "runs.png")
        # A trial's page: its description links back to the sweep's report on the parent run.
        browser.goto(ui_link(uri, exp.experiment_id, children[0].info.run_id))
        report = f"/runs/{parent.info.run_id}/artifacts/report/report.html"
        link = f"[...document.querySelectorAll('a')].find(a => a.href.includes({json.dumps(report)}))"
        browser.wait_for(f"{link} !== undefined", what="the link to the report in the trial's description")
        browser.goto(browser.evaluate(f"{link}.href"))  # the UI opens a description's links in a new tab
        browser.wait_for("document.querySelector('iframe') !== null", what="the report in MLflow's artifact view")
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank page


@pytest.mark.slow
def test_the_report_and_tables_are_served_from_the_parent_run(ui_sweep):
    uri, _, parent, children, stderr = ui_sweep
    run_id = parent.info.run_id
    listed = json.loads(_api(uri, "api/2.0/mlflow/artifacts/list", run_id=run_id))
    paths = {f["path"] for f in listed["files"]}
    assert {"report", "trials.json", "trials.csv", "ablation.json", "ablation.csv", "sweep.yaml"} <= paths
    report_files = {
        f["path"] for f in json.loads(_api(uri, "api/2.0/mlflow/artifacts/list", run_id=run_id, path="report"))["files"]
    }
    assert {"report/report.html", "report/learning_curves.png", "report/ablation.png"} <= report_files
    page = _api(uri, "get-artifact", run_uuid=run_id, path="report/report.html").decode()
    assert "mersweep report: ui-ablation" in page and 'data-images="pending"' in page
    for child in children:  # every run in the report's curve table links to its page in the UI
        assert child.info.run_id in page
    assert f'href="{ui_link(uri, parent.info.experiment_id, run_id)}"' in page.replace("&amp;", "&")
    trials = json.loads(_api(uri, "get-artifact", run_uuid=run_id, path="trials.json"))
    assert len(trials["data"]) == len(children) and {"trial", "run_id", "variant", "seed", "status"} <= set(
        trials["columns"]
    )
    ablation = json.loads(_api(uri, "get-artifact", run_uuid=run_id, path="ablation.json"))
    assert [row[ablation["columns"].index("variant")] for row in ablation["data"]] == list(VARIANTS)
    assert {"mean", "verdict"} <= set(ablation["columns"])
    tables = json.loads(parent.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "trials.json", "type": "table"} in tables  # the UI renders these as tables
    assert "report:" in stderr and str(run_id) in stderr  # the sweep said where its report went


@pytest.mark.slow
def test_the_parent_carries_the_study_and_the_trials_link_back(ui_sweep):
    _, _, parent, children, _ = ui_sweep
    metrics = parent.data.metrics
    for variant in VARIANTS:
        assert 0.0 <= metrics[f"variant/{variant}/mean"] <= 1.0
    assert "variant/no_nee/diff_mean" in metrics
    assert parent.data.params["spec.kind"] == "ablation"
    assert "ablation" in parent.data.tags["mlflow.note.content"]
    report = f"runs:/{parent.info.run_id}/report/report.html"
    assert parent.data.tags["mersweep.report"] == report
    for child in children:  # "Group by" variant / seed / phase works on params
        assert child.info.run_name.startswith(f"{child.data.params['ablation.variant']} seed ")
        assert child.data.params["ablation.variant"] in VARIANTS
        assert int(child.data.params["ablation.seed"]) in SEEDS
        assert child.data.params["ablation.phase"] == "eval"
        assert child.data.tags["mersweep.report"] == report
        note = child.data.tags["mlflow.note.content"]
        assert f"/runs/{parent.info.run_id}/artifacts/report/report.html" in note


@pytest.mark.slow
def test_each_epoch_is_logged_with_its_fold_and_round(ui_sweep):
    _, client, _, children, _ = ui_sweep
    run_id = children[0].info.run_id
    folds = {int(m.value) for m in client.get_metric_history(run_id, "trial/fold")}
    rounds = {int(m.value) for m in client.get_metric_history(run_id, "trial/round")}
    assert folds == {0, 1} and rounds == {0, 1}


# A link to a page of MLflow's UI, absolute or relative to the UI that shows it (a run's description).
UI_PAGE = re.compile(r"(?:https?://[^\s\"'<>()\]]+/)?#/experiments/[^\s\"'<>()\]]+")


@pytest.mark.slow
def test_every_link_mersweep_prints_or_stores_opens_the_training_view(ui_sweep, tmp_path):
    """The sweep's output, the report, the parent's and every trial's description, `mersweep ui`."""
    uri, _, parent, children, stderr = ui_sweep
    folder = tmp_path / "runs" / "ui-ablation"
    write_state(folder, SweepState("ui-ablation", "ui-ablation", parent.info.run_id, uri, "name: ui-ablation\n"))
    shown = run_program(["-m", "sweeps"], ["ui", str(folder)], tmp_path, timeout=120)
    assert shown.returncode == 0, shown.stderr
    page = _api(uri, "get-artifact", run_uuid=parent.info.run_id, path="report/report.html").decode()
    texts = {
        "run output": stderr,
        "mersweep ui": shown.stdout,
        "report": page.replace("&amp;", "&"),
        "parent description": parent.data.tags["mlflow.note.content"],
        **{f"trial {c.info.run_id}": c.data.tags["mlflow.note.content"] for c in children},
    }
    for where, text in texts.items():
        links = UI_PAGE.findall(text)
        assert links, f"{where}: no link to MLflow's UI in {text[-2000:]!r}"
        for link in links:
            assert link.endswith(f"?{UI_TRAINING_QUERY}"), f"{where}: {link}"
    assert f"MLflow UI:        {ui_link(uri, parent.info.experiment_id)}\n" in shown.stdout


def test_every_mlflow_link_is_built_by_ui_link():
    """One link builder: no module but sweeps/tracking/uri.py spells a page of MLflow's UI."""
    spelled = sorted(
        str(path.relative_to(ROOT))
        for top in ("sweeps", "analysis", "mer_core", "benchmarks", "run_sweep.py")
        for path in ([ROOT / top] if top.endswith(".py") else (ROOT / top).rglob("*.py"))
        if "#/experiments" in path.read_text()
    )
    assert spelled == ["sweeps/tracking/uri.py"]


def test_a_link_to_the_ui_carries_no_credentials_and_opens_the_training_view():
    from sweeps.tracking.uri import ui_base

    assert ui_base("https://user:pw@mlflow.example.org:5000/") == "https://mlflow.example.org:5000"
    assert ui_base("sqlite:///tmp/mlflow.db") is None and ui_base("/tmp/mlruns") is None
    assert ui_link("http://h:1", "3", "abc", "report/report.html") == (
        "http://h:1/#/experiments/3/runs/abc/artifacts/report/report.html?workflowType=machine_learning"
    )
    assert ui_link("", "3") == "#/experiments/3?workflowType=machine_learning"


def test_the_devtools_client_reads_a_page_it_opened(tmp_path):
    _require_chromium()
    page = Path(tmp_path / "p.html")
    page.write_text("<html><body><button onclick=\"document.body.append('clicked')\">go</button></body></html>")
    with Browser(width=400, height=300) as browser:
        browser.goto(page.as_uri())
        browser.wait_for("document.querySelector('button') !== null")
        browser.evaluate("document.querySelector('button').click()")
        assert browser.text().strip().endswith("clicked")
        png = browser.screenshot(tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_pictures_wait_until_the_page_stops_changing(tmp_path):
    """The README's pictures wait for a still page, not a fixed pause: a page that draws for a while
    is waited for until it is done; one that never stops is an error, not a half-drawn picture."""
    from analysis.report.browser import BrowserError

    _require_chromium()
    # Draws a new number every 100 ms until LIMIT have been drawn (never, for -1), then stays as it is.
    script = (
        "let n = 0; const t = setInterval(() => { n += 1; document.body.textContent = 'step ' + n; "
        "if (n === LIMIT) clearInterval(t); }, 100);"
    )
    pages = {}
    for name, limit in (("done", "15"), ("forever", "-1")):
        pages[name] = tmp_path / f"{name}.html"
        pages[name].write_text(f"<html><body>start<script>{script.replace('LIMIT', limit)}</script></body></html>")
    with Browser(width=300, height=100) as browser:
        browser.goto(pages["done"].as_uri())
        browser.wait_still(interval_s=0.3)
        assert browser.text().strip() == "step 15"  # waited past the last change
        browser.goto(pages["forever"].as_uri())
        with pytest.raises(BrowserError, match="still changing"):
            browser.wait_still(interval_s=0.3, timeout=2)


def test_an_epochs_place_is_logged_and_ablation_runs_are_named_by_their_arm():
    from sweeps.tracking.callback import _metrics_of, run_name

    result = {"val/weighted_f1": 0.5, "fold": 2, "epoch": 3, "stage": "self_training_1", "training_iteration": 9}
    assert _metrics_of(result) == {"val/weighted_f1": 0.5, "trial/fold": 2.0, "trial/epoch": 3.0, "trial/round": 1.0}
    assert _metrics_of({**result, "stage": "finetune"})["trial/round"] == 0.0
    assert "trial/fold" not in _metrics_of({"val/weighted_f1": 0.5})  # the final report: no epoch
    arm = {"ablation.variant": "no_nee", "ablation.seed": 2, "ablation.phase": "eval"}
    assert run_name("trial_main_85f180d7", arm) == "no_nee seed 2 (85f180d7)"
    assert run_name("trial_main_85f180d7", {**arm, "ablation.phase": "retune"}) == "no_nee seed 2 retune (85f180d7)"
    assert run_name("trial_main_85f180d7", {"optim.lr": 0.1}) == "trial_main_85f180d7"
