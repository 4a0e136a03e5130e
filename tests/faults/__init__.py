"""Fault tests on a real Airflow (issue 15): each file is named after its fault; run with ``-m slow``."""
