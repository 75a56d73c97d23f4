"""The conformance kit as a pytest plugin: ``pytest --pyargs invad.testing --invad-backend NAME``.

Installed with invad (entry point ``pytest11``), it adds one option,
``--invad-backend`` (repeatable; default: the comma-separated list in the
environment variable ``INVAD_TEST_BACKENDS``, else ``numpy``), and the
fixture ``invad_harness``: an installed backend with the NumPy conversions
the checks need, once per backend named. A backend named there must
install; the run fails, rather than skips, when it does not.
"""

from __future__ import annotations

import os

import pytest

from .checks import Harness


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("invad").addoption(
        "--invad-backend",
        action="append",
        default=[],
        metavar="NAME",
        help="invad backend to run the conformance kit on (repeatable; default "
        "$INVAD_TEST_BACKENDS or numpy)",
    )


def env_backends() -> list[str]:
    """The backends named in ``INVAD_TEST_BACKENDS`` (comma-separated), else ``["numpy"]``."""
    return [b for b in os.environ.get("INVAD_TEST_BACKENDS", "numpy").split(",") if b]


def backends_under_test(config: pytest.Config) -> list[str]:
    return list(config.getoption("--invad-backend")) or env_backends()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "invad_backend" in metafunc.fixturenames:
        metafunc.parametrize("invad_backend", backends_under_test(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def invad_harness(invad_backend: str) -> Harness:
    """The backend under test, installed once per session."""
    return Harness(invad_backend)
