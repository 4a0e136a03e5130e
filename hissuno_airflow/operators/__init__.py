"""Airflow operators of hissuno-airflow."""

from __future__ import annotations

from .sync import SyncOperator

__all__ = ["SyncOperator"]
