"""Shared HTTP machinery for provider clients: client, retry policy, paginators, auth, rate budget."""

from __future__ import annotations

from .auth import BasicAuth, BearerAuth, HeaderAuth, SecretAuth
from .client import Cancellable, ClientOptions, Page, ProviderClient, RateLimiter, client_factory
from .paginators import (
    BasePaginator,
    CursorPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PageRequest,
    Paginator,
    SinglePagePaginator,
    extract_items,
    find_path,
)
from .ratelimit import RateBudget
from .retry import CallInfo, Decision, LogSink, RateState, RetryPolicy

__all__ = [
    "BasePaginator",
    "BasicAuth",
    "BearerAuth",
    "CallInfo",
    "Cancellable",
    "ClientOptions",
    "CursorPaginator",
    "Decision",
    "HeaderAuth",
    "LinkHeaderPaginator",
    "LogSink",
    "NextUrlPaginator",
    "OffsetPaginator",
    "Page",
    "PageNumberPaginator",
    "PageRequest",
    "Paginator",
    "ProviderClient",
    "RateBudget",
    "RateLimiter",
    "RateState",
    "RetryPolicy",
    "SecretAuth",
    "SinglePagePaginator",
    "client_factory",
    "extract_items",
    "find_path",
]
