"""Analyses of sweeps read back from MLflow: ablation tables, reports, post-hoc voting, export."""
