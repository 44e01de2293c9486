"""Every name mersweep gives MLflow: tags, params, metrics, artifacts, written here once.

The writers (the sweep's tracker and callback, the engine, the trial functions, and the analyses
that log back: `export-best`, `fit-voting`) and the readers (`analysis/`, `benchmarks/`) import
these, so a renamed tag cannot leave a reader looking for the old one.
`tests/test_tracking_names.py` checks that no other module spells them.

Names built from data (per-variant, per-head, per-metric) are functions; `mlflow_key` turns any
name into a key MLflow accepts. Flattened config params (`model.hidden_dim`) and the metrics
`mer_core.train` reports (`val/weighted_f1`, `val/f1/<class>`, and once at the end the held-out
`test/weighted_f1`, `test/f1/<class>`) are named by the config and the trainer; only the prefixes
mersweep adds to them are here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# -- the experiment ---------------------------------------------------------------------------
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow's own: the kind of work an experiment holds
TRAINING_KIND = "custom_model_development"  # ...model training: the UI's "Training runs", not GenAI traces
# MLflow 3.17's UI picks its GenAI / Model training side from this query (then remembers it), before
# it reads the experiment's kind; every link mersweep writes carries it, so it opens on the runs.
UI_TRAINING_QUERY = "workflowType=machine_learning"

# -- tags every run carries -------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its sweep's run
RUN_NAME_TAG = "mlflow.runName"  # MLflow's own: the name the UI shows
TOKEN_TAG = "mersweep.create_token"  # finds a run whose creation answer an outage swallowed
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description (Markdown) on its page
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # MLflow's own: the JSON tables its UI renders
REPORT_TAG = "mersweep.report"  # the sweep report's artifact URI (parent and every trial's run)

# -- the sweep's parent run -------------------------------------------------------------------
SWEEP_TAG = "mersweep.sweep"  # the sweep's name; marks a run as a sweep's parent run
GIT_SHA_TAG = "mersweep.git_sha"
COMMAND_TAG = "mersweep.command"  # the command line, credentials redacted
OPTUNA_STUDY_TAG = "mersweep.optuna_study"  # where the sweep's Optuna studies are: names, storage (redacted)
BEST_TRIAL_TAG = "mersweep.best_trial"
BEST_RUN_TAG = "mersweep.best_run_id"
EXPORT_MODEL_TAG = "mersweep.export.model"  # `export-best`: the registered model's URI
SWEEP_ARTIFACT = "sweep.yaml"  # the resolved sweep spec (`load_sweep` reads it back)
SPACE_ARTIFACT = "search_space.yaml"  # the resolved search space (`load_space` reads it back)
EXPORT_ARTIFACT_DIR = "export"  # `export-best`: the exported config
REPORT_DIR = "report"  # the HTML report and its PNGs, under the parent run
REPORT_PAGE = "report.html"  # the report's page (in REPORT_DIR; also the local file `analysis report` writes)
TRIALS_TABLE = "trials.json"  # one row per trial, in `log_table`'s format: the UI renders it
TRIALS_CSV = "trials.csv"  # the same rows for a spreadsheet
ABLATION_TABLE = "ablation.json"  # an ablation's comparison: one row per variant (as the UI table)
ABLATION_CSV = "ablation.csv"
_BEST_PREFIX = "best/"
_SPEC_PREFIX = "spec."  # the resolved spec, flattened, as the parent run's params
_VARIANT_PREFIX = "variant/"

# -- a trial's child run ----------------------------------------------------------------------
TRIAL_TAG = "mersweep.trial_id"  # Ray's trial id (fused: `<ray trial id>-m<i>`); a resume reuses the run
STATUS_TAG = "mersweep.status"  # ok | pruned | diverged | invalid | error | interrupted | superseded
FAILURE_TAG = "mersweep.failure_reason"
# Where a trial's report stood in its fold (reported each epoch), so curves can be drawn per fold.
FOLD_METRIC = "trial/fold"
EPOCH_METRIC = "trial/epoch"  # the epoch within its stage
ROUND_METRIC = "trial/round"  # the stage: 0 = supervised fine-tuning, r = self-training round r
OPTUNA_TRIAL_TAG = "mersweep.optuna_trial"  # the trial's number in the sweep's Optuna study
PHASE_TAG = "mersweep.phase"  # set by runs logged after the sweep (`export-best`'s re-runs)
EXPORT_SOURCE_TAG = "mersweep.export.source_run"  # on a re-seeded run: the run whose config it re-ran
VARIANT_PARAM = "ablation.variant"  # an ablation trial's variant, seed and phase
ABLATION_SEED_PARAM = "ablation.seed"
PHASE_PARAM = "ablation.phase"
CONFIG_SEED_PARAM = "seed"  # the flattened experiment config's own seed
CONFIG_ARTIFACT = "config.yaml"  # the trial's complete config: `python -m mer_core.train config.yaml`
LOGITS_ARTIFACT = "val_logits.npz"  # every head's validation logits (post-hoc voting)
TRIAL_ARTIFACT = "trial.json"  # status, final metrics, pseudo-label reports
_FINAL_PREFIX = "final/"

# -- phases (PHASE_PARAM, PHASE_TAG) ----------------------------------------------------------
SEARCH_PHASE = "search"  # a search sweep's trials (they carry no phase)
RETUNE_PHASE = "retune"  # an ablation's nuisance re-tuning trials
EVAL_PHASE = "eval"  # an ablation's measured trials, paired over seeds
VARIANCE_PHASE = "variance"  # an ablation's crossed init x split seeds of the reference (variance sources)
RESEED_PHASE = "export-reseed"  # `export-best`'s re-runs of a configuration under other seeds

# -- `fit-voting` on a trial's run ------------------------------------------------------------
POSTHOC_VAL_F1 = "posthoc/val/weighted_f1"
POSTHOC_VAL_F1_REFERENCE = "posthoc/val/weighted_f1_reference"
POSTHOC_CV_F1 = "posthoc/cv/weighted_f1_fitted"
POSTHOC_CV_F1_REFERENCE = "posthoc/cv/weighted_f1_reference"
POSTHOC_GAIN = "posthoc/gain"
POSTHOC_SPACE_TAG = "mersweep.posthoc.space"
POSTHOC_ARTIFACT = "posthoc_voting.json"
_POSTHOC_WEIGHT_PREFIX = "mersweep.posthoc.weight."


def best_metric(metric: str) -> str:
    """The parent run's metric holding the best trial's value of `metric` (`best/val/weighted_f1`)."""
    return f"{_BEST_PREFIX}{metric}"


def spec_param(field: str) -> str:
    """The parent-run param of a dotted sweep-spec field (`spec.search.algorithm`)."""
    return f"{_SPEC_PREFIX}{field}"


def variant_metric(variant: str, column: str) -> str:
    """A parent-run metric of one ablation variant: a column of the comparison (`variant/no_nee/mean`)."""
    return mlflow_key(f"{_VARIANT_PREFIX}{variant}/{column}")


def final_metric(name: str) -> str:
    """A trial's final value of metric `name` (`final/val/weighted_f1`), beside its last epoch's."""
    return f"{_FINAL_PREFIX}{name}"


def posthoc_weight_tag(head: str) -> str:
    """The tag holding the post-hoc fitted voting weight of `head`."""
    return f"{_POSTHOC_WEIGHT_PREFIX}{head}"


_MLFLOW_REFUSED = re.compile(r"[^/\w.\- :]")  # MLflow keys: word characters, / . - space and colon


def mlflow_key(name: str) -> str:
    """`name` as a key MLflow accepts for a metric or param.

    Per-class metrics carry the class names of the user's label file (`val/f1/very, happy`) and
    params the modality names of their config; MLflow refuses a whole `log_batch` for one key with
    another character, or with a path segment that normalises away (`val/f1/..`), which lost every
    metric of every trial. Such characters become `_`, such segments underscores.
    """
    parts = [_MLFLOW_REFUSED.sub("_", part) for part in name.split("/")]
    return "/".join(part if part.strip(".") else "_" * max(len(part), 1) for part in parts)


def mlflow_items(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` under `mlflow_key` names; of two names that become one key, the first is kept
    (MLflow refuses a batch with a param key twice)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        out.setdefault(mlflow_key(name), value)
    return out
