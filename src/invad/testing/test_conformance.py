"""The conformance suite: every check of the kit on each backend under test.

Run it on any installed backend with ``pytest --pyargs invad.testing --invad-backend NAME``.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ..rules import RULES
from . import cases as C
from . import checks
from .oracle import load_cases, replays

CASES = [
    pytest.param(op, shape, dtype, id=f"{op}-{shape.id}-{dtype}")
    for op in RULES
    for shape in C.SHAPES[op]
    for dtype in C.DTYPES
]
# The native-AD comparison runs in double precision, where its tolerances are tight.
DOUBLE_CASES = [
    pytest.param(op, shape, dtype, id=f"{op}-{shape.id}-{dtype}")
    for op in RULES
    for shape in C.SHAPES[op]
    for dtype in C.DTYPES
    if dtype in ("float64", "complex128")
]


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def needs(harness: checks.Harness, *dtypes: str) -> None:
    """Skip, with the backend's reason, a case in a dtype it cannot hold as configured
    (float64 under JAX without 64-bit mode: the reason says how to turn it on)."""
    for dtype in dtypes:
        reason = harness.unsupported().get(dtype)
        if reason is not None:
            pytest.skip(reason)


@pytest.mark.parametrize(("op", "shape", "dtype"), CASES)
def test_forward_reconstructs_the_input(invad_harness, op, shape, dtype):
    needs(invad_harness, dtype)
    result = checks.check_forward(invad_harness, op, shape, dtype, rng_for(op, shape, dtype))
    assert result.passed, result


@pytest.mark.parametrize(("op", "shape", "dtype"), CASES)
def test_jvp_matches_central_differences(invad_harness, op, shape, dtype):
    needs(invad_harness, dtype)
    result = checks.check_jvp(invad_harness, op, shape, dtype, rng_for(op, shape, dtype))
    assert result.passed, result


@pytest.mark.parametrize(("op", "shape", "dtype"), CASES)
def test_vjp_is_adjoint_of_jvp(invad_harness, op, shape, dtype):
    needs(invad_harness, dtype)
    result = checks.check_vjp(invad_harness, op, shape, dtype, rng_for(op, shape, dtype))
    assert result.passed, result


@pytest.mark.parametrize(("op", "shape", "dtype"), DOUBLE_CASES)
def test_native_ad_agrees_with_the_rules(invad_harness, op, shape, dtype):
    needs(invad_harness, dtype)
    if not invad_harness.backend.native_ad:
        pytest.skip(f"backend {invad_harness.backend.name!r} has no AD engine")
    results = list(checks.check_native(invad_harness, op, shape, dtype, rng_for(op, shape, dtype)))
    if not results:
        pytest.skip(f"backend {invad_harness.backend.name!r} offers no native_jvp/native_vjp")
    assert all(r.passed for r in results), results


ORACLE = [
    pytest.param(case, replay, id=f"{case.case_id}-{replay.op}")
    for case in load_cases()
    for replay in replays(case)
]


def test_every_oracle_case_is_replayed():
    assert len({case.case_id for case, _ in (p.values for p in ORACLE)}) == 254


@pytest.mark.parametrize(("case", "replay"), ORACLE)
def test_oracle_jvp_and_vjp(invad_harness, case, replay):
    needs(invad_harness, *(x.dtype.name for x in replay.primals))
    results = list(checks.check_oracle(invad_harness, case.case_id, replay, *case.first_order))
    assert [r.check for r in results] == ["oracle-jvp", "oracle-vjp"]
    assert all(r.passed for r in results), results


@pytest.mark.parametrize("op", list(RULES))
def test_errors_are_clear(invad_harness, op):
    # Error behaviour does not depend on precision: single precision where double is not held.
    results = list(checks.check_errors(invad_harness.narrowed(), op))
    assert results
    assert all(r.passed for r in results), [r for r in results if not r.passed]
