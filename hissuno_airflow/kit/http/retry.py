"""Retry policy: classify each HTTP outcome once, then act on that decision.

``RetryPolicy.classify`` looks at one response (or transport error) and returns a ``Decision``: return
it, retry after a delay, or raise. ``RetryPolicy.execute`` is the only loop: it sends, classifies,
sleeps through the injectable sleeper and maps a final failure onto the kit error tree:

- 429, 403 carrying rate-limit headers (GitHub), or what the plugin's ``rate_limited_when`` flags
  (Linear's 400 ``RATELIMITED``) -> ``RateLimited`` when retries run out, or at once
  when the provider asks us to wait longer than ``max_retry_after`` (the scheduler retries later,
  instead of a worker slot sleeping);
- 5xx and network errors -> ``ProviderUnavailable`` after retries;
- 401/403 -> ``ProviderAuthError``; any other 4xx -> ``ProviderResponseError``;
- a ``ResponseFault`` that the call's ``check`` finds in a body (a GraphQL ``errors`` array in a 200)
  -> classified by its ``kind`` exactly like the status it stands for (``rate_limited`` is retried like
  a 429, ``unavailable`` like a 503).

Waits come from ``Retry-After`` (seconds or an HTTP date), else from a reset header
(``X-RateLimit-Reset`` as epoch seconds or an ISO timestamp as Jira sends it, ``RateLimit-Reset`` as
a delta), else exponential backoff with jitter.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx

from ..errors import (
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailable,
    RateLimited,
)
from ..redaction import redact_text

Action = Literal["return", "retry", "raise"]
"""What ``execute`` does with an outcome."""
Kind = Literal["ok", "rate_limited", "unavailable", "auth", "client_error", "network"]
"""What an outcome means, independent of the attempt count."""

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

# Transport errors worth another try; the rest (unsupported scheme, a malformed request we built)
# fail the same way every time.
_RETRIABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_RESET_HEADERS = ("x-ratelimit-reset", "x-ratelimit-requests-reset", "x-ratelimit-complexity-reset", "ratelimit-reset")
# (remaining, reset) header pairs of one budget each: the generic window, and Linear's separate request
# and query-complexity budgets. Any of them at zero means the next request waits for that budget's reset.
_BUDGETS = (
    ("x-ratelimit-remaining", "x-ratelimit-reset"),
    ("x-ratelimit-requests-remaining", "x-ratelimit-requests-reset"),
    ("x-ratelimit-complexity-remaining", "x-ratelimit-complexity-reset"),
)
_CODE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class LogSink(Protocol):
    """The logging surface the HTTP layer needs; ``logging.Logger`` and the kit ``Logger`` both fit."""

    def debug(self, message: str, /) -> None: ...
    def warning(self, message: str, /) -> None: ...


FaultKind = Literal["rate_limited", "unavailable", "auth", "client_error"]
"""What a failure found inside a response body stands for."""


@dataclass(frozen=True)
class ResponseFault:
    """A failure a response reports in its body but not in its status (GraphQL ``errors`` in a 200)."""

    kind: FaultKind
    """Handled like a 429 (``rate_limited``), a 503 (``unavailable``), a 401 (``auth``) or a 400."""
    detail: str
    """Short text for the error message (redacted before use); never a whole body."""
    code: str | None = None
    """Provider error code (``RATELIMITED``); shown only when identifier-like."""


ResponseCheck = Callable[[httpx.Response], ResponseFault | None]
"""Looks at a read response and returns the failure it carries, or ``None``."""


@dataclass(frozen=True)
class Decision:
    """The classification of one outcome."""

    action: Action
    """Return the response, retry after ``delay``, or raise."""
    kind: Kind
    """What the outcome means."""
    delay: float = 0.0
    """Seconds to wait before the next attempt (``retry`` only)."""
    retry_after: float | None = None
    """Seconds the provider asked us to wait, when it said so."""
    cooldown_until: float | None = None
    """Epoch time before which no further request should go out (a successful reply with no budget left)."""
    fault: ResponseFault | None = None
    """The body-level failure behind this decision, when a ``ResponseCheck`` found one."""


@dataclass
class RateState:
    """Per-client memory between calls: when the provider's budget refills."""

    not_before: float = 0.0
    """Epoch seconds; requests before this wait (the last reply said the budget is spent)."""


@dataclass(frozen=True)
class CallInfo:
    """Who is calling what, for error messages and logs (never carries a query string)."""

    provider: str
    method: str
    path: str
    secrets: tuple[str, ...] = ()
    """Values to mask in any text produced."""
    allow_statuses: frozenset[int] = frozenset()
    """Non-retriable statuses handed back to the caller instead of raised (e.g. 404 for a lookup)."""
    error_code: Callable[[httpx.Response], str | None] | None = None
    """Extracts a provider error code (e.g. ``ratelimited``) to append to error text."""
    check: ResponseCheck | None = None
    """Finds a failure inside a response body (GraphQL ``errors``); consulted on every response."""
    provider_name: str | None = None
    """The provider's display name for plain-words log lines ("waiting 30 s for Zendesk's rate limit")."""

    @property
    def label(self) -> str:
        """``<provider> <METHOD> <path>``, redacted."""
        return redact_text(f"{self.provider} {self.method} {self.path}", self.secrets)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with Retry-After support; clock, sleeper and jitter are injectable for tests."""

    max_attempts: int = 5
    """Total attempts, the first one included."""
    backoff_base: float = 0.5
    """First backoff in seconds; doubles per attempt."""
    backoff_max: float = 30.0
    """Ceiling of one backoff wait."""
    max_retry_after: float = 120.0
    """A longer announced wait raises ``RateLimited`` at once instead of sleeping."""
    retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES
    """Statuses retried (a plugin may add its own, e.g. Notion's 529)."""
    sleep: Callable[[float], object] = field(default=time.sleep, repr=False)
    """Sleeper; tests record calls instead of sleeping."""
    clock: Callable[[], float] = field(default=time.time, repr=False)
    """Wall clock in epoch seconds, used for HTTP dates and reset timestamps."""
    jitter: Callable[[], float] = field(default=random.random, repr=False)
    """Returns a number in [0, 1); scales backoff between half and all of its nominal value."""
    rate_limited_when: Callable[[httpx.Response], bool] | None = field(default=None, repr=False)
    """Extra rate-limit signal for a provider that does not always answer 429: Linear's HTTP 400 with a
    ``RATELIMITED`` GraphQL error, GitHub's secondary-limit 403 that carries only a message. The body
    has been read when it is called. 429 (and 403 with rate-limit headers) count regardless."""
    rate_limit_min_wait: float = 0.0
    """Shortest wait after a rate-limited answer that announces none (GitHub asks for at least 60 s);
    the exponential backoff applies when it is longer."""
    remaining_header: str | None = None
    """A provider's own remaining-requests header, read on successful answers besides the standard
    ``X-RateLimit-Remaining`` (HubSpot's ``X-HubSpot-RateLimit-Remaining``)."""
    window_ms_header: str | None = None
    """Header with the length of that budget's rolling window in milliseconds
    (``X-HubSpot-RateLimit-Interval-Milliseconds``): when the remaining count reaches 0 and no reset time
    is announced, the next request waits one window instead of drawing a 429."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts: expected >= 1; got {self.max_attempts!r}"
            raise ValueError(msg)
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))

    def replace(self, **changes: Any) -> RetryPolicy:
        """Return a copy with some settings changed."""
        return replace(self, **changes)

    def backoff(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1``: exponential, capped, with jitter."""
        nominal = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        # Equal jitter: never less than half the nominal wait, so a burst of clients still spreads out
        # without collapsing to zero.
        return nominal * (0.5 + 0.5 * self.jitter())

    def classify(
        self,
        attempt: int,
        response: httpx.Response | None = None,
        error: Exception | None = None,
        *,
        fault: ResponseFault | None = None,
    ) -> Decision:
        """Decide what to do with the outcome of attempt ``attempt`` (1-based).

        ``fault`` is what a ``ResponseCheck`` found in the body; it counts like the status its kind
        stands for, except that a rate-limit or server-error status keeps its own meaning.
        """
        decision = self._classify(attempt, response, error, fault)
        return replace(decision, fault=fault) if fault is not None and response is not None else decision

    def _classify(
        self,
        attempt: int,
        response: httpx.Response | None,
        error: Exception | None,
        fault: ResponseFault | None,
    ) -> Decision:
        last = attempt >= self.max_attempts
        if response is None:
            if isinstance(error, _RETRIABLE_TRANSPORT) and not last:
                return Decision("retry", "network", delay=self.backoff(attempt))
            return Decision("raise", "network")

        status = response.status_code
        said = fault.kind if fault is not None else None
        limited = (
            _is_rate_limited(response)
            or said == "rate_limited"
            or (self.rate_limited_when is not None and status >= 400 and self.rate_limited_when(response))
        )
        wait = self.announced_wait(response, rate_limited=limited)
        if limited:
            if wait is not None and wait > self.max_retry_after:
                return Decision("raise", "rate_limited", retry_after=wait)
            if last:
                return Decision("raise", "rate_limited", retry_after=wait)
            delay = wait if wait is not None else max(self.rate_limit_min_wait, self.backoff(attempt))
            return Decision("retry", "rate_limited", delay=delay, retry_after=wait)
        if status in self.retry_statuses or said == "unavailable":
            # A 4xx a plugin opted into retrying (e.g. 409) is transient too, like a 5xx.
            kind: Kind = "unavailable"
            if last or (wait is not None and wait > self.max_retry_after):
                return Decision("raise", kind, retry_after=wait)
            delay = wait if wait is not None else self.backoff(attempt)
            return Decision("retry", kind, delay=delay, retry_after=wait)
        if status in (401, 403) or said == "auth":
            return Decision("raise", "auth")
        if status >= 500:
            return Decision("raise", "unavailable")
        if status >= 400 or said == "client_error":
            return Decision("raise", "client_error")
        cooldown = None
        if _spent(response):
            reset = self._reset_wait(response)
            if reset is not None and reset > 0:
                cooldown = self.clock() + reset
        elif self.remaining_header and _header(response, self.remaining_header.lower()) == "0":
            window = self._window_wait(response)
            if window is not None:
                cooldown = self.clock() + window
        return Decision("return", "ok", cooldown_until=cooldown)

    def _window_wait(self, response: httpx.Response) -> float | None:
        reset = self._reset_wait(response)
        if reset is not None and reset > 0:
            return reset
        raw = _header(response, self.window_ms_header.lower()) if self.window_ms_header else None
        try:
            window = float(raw) / 1000 if raw is not None else None
        except ValueError:
            return None
        return window if window is not None and math.isfinite(window) and window > 0 else None

    def announced_wait(self, response: httpx.Response, *, rate_limited: bool = False) -> float | None:
        """Seconds the provider asks us to wait, from ``Retry-After`` or a rate-limit reset header.

        A reset header counts only on a rate-limited answer: on a normal one it is merely the end of
        the current window.
        """
        retry_after = _header(response, "retry-after")
        if retry_after is not None:
            wait = self._parse_wait(retry_after, delta_below=math.inf)
            if wait is not None:
                return wait
        if rate_limited or response.status_code == 429 or _spent(response):
            return self._reset_wait(response)
        return None

    def _reset_wait(self, response: httpx.Response) -> float | None:
        # The reset of a spent budget first (the longest, when several are spent): the one that limits.
        spent = [w for remaining, reset in _BUDGETS if _header(response, remaining) == "0"
                 and (value := _header(response, reset)) is not None
                 and (w := self._parse_wait(value, delta_below=1e8)) is not None]
        if spent:
            return max(spent)
        for name in _RESET_HEADERS:
            value = _header(response, name)
            if value is not None:
                wait = self._parse_wait(value, delta_below=1e8)
                if wait is not None:
                    return wait
        return None

    def _parse_wait(self, value: str, *, delta_below: float) -> float | None:
        """Parse seconds, epoch seconds/milliseconds, an HTTP date or an ISO timestamp into a wait."""
        value = value.strip()
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                return None
            if number < delta_below:
                return max(0.0, number)
            epoch = number / 1000 if number > 1e12 else number
            return max(0.0, epoch - self.clock())
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - self.clock())

    def execute(
        self,
        send: Callable[[], httpx.Response],
        call: CallInfo,
        *,
        logger: LogSink | None = None,
        state: RateState | None = None,
    ) -> httpx.Response:
        """Send until the outcome is final; return the response or raise a kit ``ProviderError``.

        Args:
            send: Performs one HTTP attempt.
            call: Provider, method and path, for messages.
            logger: Receives one warning per retry ("attempt n/N").
            state: Remembers a spent rate budget across calls of one client.

        Returns:
            A response that is neither retriable nor an error (or whose status is in
            ``call.allow_statuses``).

        Raises:
            RateLimited: 429 (or GitHub's 403) after retries, or a wait above ``max_retry_after``.
            ProviderUnavailable: 5xx or network failure after retries.
            ProviderAuthError: 401/403.
            ProviderResponseError: any other 4xx.
            ProviderError: a transport error that retrying cannot fix.
        """
        if state is not None:
            self._wait_for_budget(state, call, logger)
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: httpx.TransportError | None = None
            try:
                response = send()
            except httpx.TransportError as exc:
                error = exc
            fault = call.check(response) if call.check is not None and response is not None else None
            decision = self.classify(attempt, response, error, fault=fault)
            if decision.action == "return" and response is not None:
                if state is not None and decision.cooldown_until is not None:
                    state.not_before = decision.cooldown_until
                return response
            if decision.action == "retry":
                if response is not None:
                    response.close()
                if logger is not None:
                    reason = _reason(response, error, decision.fault)
                    wait = (f"waiting {_words(decision.delay)} for {call.provider_name or call.provider}'s rate limit"
                            if decision.kind == "rate_limited" else f"retrying in {_seconds(decision.delay)}")
                    logger.warning(
                        redact_text(f"{call.label}: {reason}; attempt {attempt}/{self.max_attempts}, {wait}",
                                    call.secrets)
                    )
                self.sleep(decision.delay)
                continue
            if response is not None and response.status_code in call.allow_statuses:
                return response
            raise error_for(call, decision, attempt, response, error) from error

    def _wait_for_budget(self, state: RateState, call: CallInfo, logger: LogSink | None) -> None:
        wait = state.not_before - self.clock()
        if wait <= 0:
            return
        if wait > self.max_retry_after:
            msg = redact_text(f"{call.label}: rate limit budget spent (retry after {_seconds(wait)})", call.secrets)
            raise RateLimited(msg, provider=call.provider, status=None, retry_after=wait)
        if logger is not None:
            logger.warning(redact_text(f"{call.label}: request budget spent; waiting {_words(wait)} for"
                                       f" {call.provider_name or call.provider}'s rate limit", call.secrets))
        self.sleep(wait)


def error_for(
    call: CallInfo,
    decision: Decision,
    attempt: int,
    response: httpx.Response | None,
    error: BaseException | None,
) -> ProviderError:
    """Build the kit error for a final outcome; the text names no header value, body or query."""
    if response is None:
        name = type(error).__name__ if error is not None else "no response"
        tries = f" after {attempt} attempt{'s' if attempt != 1 else ''}"
        msg = redact_text(f"{call.label}: {name}{tries}", call.secrets)
        if decision.kind == "network" and isinstance(error, _RETRIABLE_TRANSPORT):
            return ProviderUnavailable(msg, provider=call.provider)
        return ProviderError(msg, provider=call.provider)

    status = response.status_code
    # The standard phrase, not the server's: a reason line is provider-controlled text.
    text = f"{call.label}: {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    fault = decision.fault
    if fault is not None:
        # A 2xx status says nothing; the fault's own text (one line, bounded, redacted below) does.
        detail = _one_line(fault.detail)
        text = f"{call.label}: {detail}" if status < 300 else f"{text}: {detail}"
    code = _fault_code(fault) if fault is not None else _safe_code(call, response)
    if code:
        text += f" ({code})"
    if decision.retry_after is not None:
        text += f" (retry after {_seconds(decision.retry_after)})"
    if attempt > 1:
        text += f" after {attempt} attempts"
    msg = redact_text(text, call.secrets)
    if decision.kind == "rate_limited":
        return RateLimited(msg, provider=call.provider, status=status, retry_after=decision.retry_after)
    if decision.kind == "auth":
        return ProviderAuthError(msg, provider=call.provider, status=status)
    if decision.kind == "unavailable":
        return ProviderUnavailable(msg, provider=call.provider, status=status)
    return ProviderResponseError(msg, provider=call.provider, status=status)


def _safe_code(call: CallInfo, response: httpx.Response) -> str | None:
    if call.error_code is None:
        return None
    try:
        code = call.error_code(response)
    except Exception:  # a code extractor must never hide the real error
        return None
    # Only short identifier-like codes pass, so a body excerpt can never ride along.
    if code and _CODE_RE.match(code):
        return code
    return None


def _fault_code(fault: ResponseFault) -> str | None:
    return fault.code if fault.code and _CODE_RE.match(fault.code) else None


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _is_rate_limited(response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    # GitHub signals both primary and secondary limits with 403 plus these headers.
    return response.status_code == 403 and (
        _header(response, "x-ratelimit-remaining") == "0" or _header(response, "retry-after") is not None
    )


def _spent(response: httpx.Response) -> bool:
    """Whether any budget the response reports is at zero."""
    return any(_header(response, remaining) == "0" for remaining, _ in _BUDGETS)


def _header(response: httpx.Response, name: str) -> str | None:
    value = response.headers.get(name)
    return value.strip() if value is not None else None


def _reason(
    response: httpx.Response | None,
    error: BaseException | None,
    fault: ResponseFault | None = None,
) -> str:
    if response is not None:
        reason = f"{response.status_code} {httpx.codes.get_reason_phrase(response.status_code)}"
        code = _fault_code(fault) if fault is not None else None
        return f"{reason} ({code})" if code else reason
    return type(error).__name__


def _words(value: float) -> str:
    """A wait as a person reads it: ``30 s``, ``0.5 s``, ``2 min 5 s``."""
    text = _seconds(value)[:-1]
    if value >= 60:
        whole = math.ceil(value - 0.05)
        return f"{whole // 60} min {whole % 60} s" if whole % 60 else f"{whole // 60} min"
    return f"{text} s"


def _seconds(value: float) -> str:
    """Format a wait: whole seconds when close to one, else one decimal."""
    if value >= 10 or abs(value - round(value)) < 0.05:
        return f"{math.ceil(value - 0.05):d}s"
    return f"{value:.1f}s"
