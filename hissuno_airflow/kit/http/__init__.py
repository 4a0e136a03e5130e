"""Shared HTTP machinery for provider clients: client, retry policy, paginators, auth, rate budget,
GraphQL and capped-search windowing."""

from __future__ import annotations

from .auth import BasicAuth, BearerAuth, HeaderAuth, SecretAuth
from .client import Cancellable, ClientOptions, Page, ProviderClient, RateLimiter, client_factory
from .graphql import GraphQL, graphql_check, normalize_code, operation_label
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
from .ratelimit import AllBudgets, BudgetScope, NamedBudget, RateBudget, SharedRateBudget, SlotLedger
from .retry import CallInfo, Decision, LogSink, RateState, ResponseCheck, ResponseFault, RetryPolicy
from .windowed import windowed_search

__all__ = [
    "AllBudgets",
    "BasePaginator",
    "BasicAuth",
    "BearerAuth",
    "BudgetScope",
    "CallInfo",
    "Cancellable",
    "ClientOptions",
    "CursorPaginator",
    "Decision",
    "GraphQL",
    "HeaderAuth",
    "LinkHeaderPaginator",
    "LogSink",
    "NamedBudget",
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
    "ResponseCheck",
    "ResponseFault",
    "RetryPolicy",
    "SecretAuth",
    "SharedRateBudget",
    "SinglePagePaginator",
    "SlotLedger",
    "client_factory",
    "extract_items",
    "find_path",
    "graphql_check",
    "normalize_code",
    "operation_label",
    "windowed_search",
]
