"""The labeling page's one error type: a request it cannot serve, with the HTTP status to answer with."""

from __future__ import annotations


class ApiError(Exception):
    """A request that cannot be served; becomes a JSON error response with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
