"""Built-in integration plugins, listed as dotted module paths; nothing is imported eagerly."""

from __future__ import annotations

BUILTIN_PLUGINS: dict[str, str] = {
    "sample": "hissuno_airflow.plugins.sample.plugin",
}
"""Plugin id -> module exposing ``plugin``. Provider plugins join here as they are built."""
