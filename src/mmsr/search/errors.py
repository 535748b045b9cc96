"""Typed search failures. Tools catch these and turn them into observations."""

from __future__ import annotations


class SearchError(RuntimeError):
    """Base class: every backend failure is one of these, never a bare exception."""

    def __init__(self, message: str, *, backend: str = "", retryable: bool = False):
        super().__init__(f"[{backend}] {message}" if backend else message)
        self.message = message  # without the backend prefix, for re-wrapping
        self.backend = backend
        self.retryable = retryable


class SearchTimeout(SearchError):
    """The backend did not answer in time."""


class RateLimited(SearchError):
    """HTTP 429 or the backend's own quota message."""


class BackendUnavailable(SearchError):
    """HTTP 5xx, connection refused, or the server is overloaded."""


class MalformedResponse(SearchError):
    """The body is not the documented JSON."""


class RefusedURL(SearchError):
    """The fetcher refused a URL (scheme, private/loopback/metadata address, size)."""


class BadRequest(SearchError):
    """Invalid input from the caller (empty query, undecodable image, bad k)."""
