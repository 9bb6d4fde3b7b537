"""Retries for transient API failures: throttling, server errors and dropped connections."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # includes ConnectionResetError and ConnectionRefusedError
    TimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can fix: 429, 5xx, resets and timeouts; never for 4xx answers."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES
    return isinstance(exc, _CONNECTION_ERRORS)


def retry_after(exc: BaseException) -> float | None:
    """The server's Retry-After in seconds, when it sent one."""
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: base, 2*base, 4*base, ... capped at max_delay, for up to attempts tries."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        hinted = retry_after(exc) if exc is not None else None
        computed = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return min(hinted, self.max_delay) if hinted is not None else computed

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """func(*args, **kwargs), retried on transient failures; the last failure is raised as is."""
        for attempt in range(1, self.attempts + 1):
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if attempt == self.attempts or not is_transient(exc):
                    raise
                self.sleep(self.delay(attempt, exc))
        raise AssertionError("unreachable: the loop returns or raises")
