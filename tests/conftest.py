"""Shared fixtures: the backends under test come from INVAD_TEST_BACKENDS (default numpy)."""

from __future__ import annotations

import pytest

from invad.testing import Harness
from invad.testing.plugin import env_backends

BACKENDS = env_backends()


@pytest.fixture(scope="session", params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    """An installed backend under test. A backend named here must install: no skip."""
    return Harness(request.param)
