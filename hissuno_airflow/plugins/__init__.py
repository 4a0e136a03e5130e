"""Built-in integration plugins: every sub-package here with a ``plugin.py`` is one, and that is the only
place a built-in is registered (adding a provider is adding its folder). Nothing is imported eagerly."""

from __future__ import annotations

import pkgutil
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def builtin_plugins() -> dict[str, str]:
    """Folder name -> module exposing ``plugin`` (``hissuno_airflow.plugins.<folder>.plugin``)."""
    return {
        info.name: f"{__name__}.{info.name}.plugin"
        for info in pkgutil.iter_modules([str(_HERE)])
        if info.ispkg and (_HERE / info.name / "plugin.py").is_file()
    }
