"""invad's own exceptions. Singular matrices raise the framework's LinAlgError instead."""

from __future__ import annotations


class BackendNotFoundError(LookupError):
    """No backend of that name can be installed: unknown, unavailable, or its plugin failed.

    The message lists the available backends and, for each plugin that failed
    to load, why; where a specific failure explains this one, the exception is
    chained to it (``__cause__``).
    """
