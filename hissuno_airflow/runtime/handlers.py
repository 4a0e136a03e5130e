"""One adapter that calls a plugin handler, whether it is ``def`` or ``async def``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


def call_handler(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; run it to completion on a private event loop when it is a coroutine function."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(aw: Any) -> Any:
    return await aw
