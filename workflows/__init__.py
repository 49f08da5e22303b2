"""Dagster wiring: Definitions, jobs, resources and the headless build."""
