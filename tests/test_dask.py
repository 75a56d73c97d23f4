"""The Dask backend on a real ``dask.distributed`` cluster, against the NumPy backend.

Runs where dask and distributed import (``nox -s tests-dask``); skipped
elsewhere. A session fixture starts a ``LocalCluster`` of two worker
processes with one thread each and closes it; every computation waits at most
:data:`TIMEOUT` seconds.

- every op, on the conformance kit's shape families and on larger batches
  in random uneven chunks (the problem's dimensions chunked too): values,
  ``ops.jvp`` and ``ops.vjp`` equal NumPy's (the same kernels, on other
  blocks: equal up to the order of the sums over broadcast batches);
- results are lazy: shape, dtype and meta are right, nothing computed;
  chunks follow the inputs' batch chunks as Dask's elementwise ops align them;
- errors: bad input raises at call time with NumPy's message; a singular
  matrix raises NumPy's ``LinAlgError`` when computed, with NumPy's message
  (the batch index in the whole array); ``info`` is a lazy integer array;
- the forward task runs once per block when values and derivatives are
  computed together (counted on the workers);
- the dispatch of CuPy-backed blocks to CuPy's kernels, on a stand-in
  (no GPU here: the CuPy kernels themselves are tests/test_cupy.py's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import sys
import types
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402
from dask.utils import key_split  # noqa: E402

import invad  # noqa: E402
from invad.backends import dask as dask_backend  # noqa: E402
from invad.backends.dask import _chunks  # noqa: E402
from invad.rules import RULES  # noqa: E402
from invad.testing import Harness, checks  # noqa: E402
from invad.testing import cases as C  # noqa: E402

#: Seconds any one computation on the cluster may take.
TIMEOUT = 120

OPS = invad.install("dask")
NP = invad.install("numpy")
NUMPY = Harness("numpy")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two worker processes, one thread each: blocks really travel between processes."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        timeout=TIMEOUT,
    )
    client = distributed.Client(cluster, timeout=TIMEOUT)
    try:
        yield client
    finally:
        client.close(timeout=TIMEOUT)
        cluster.close(timeout=TIMEOUT)


def compute(client: Any, *xs: Any) -> list[Any]:
    """``xs`` computed together (``None`` stays ``None``): on the cluster, in time, or
    with ``client=None`` in this process (Dask's synchronous scheduler)."""
    todo = [x for x in xs if x is not None]
    if client is None:
        done = dask.compute(*todo, scheduler="sync")
    else:
        done = [f.result(timeout=TIMEOUT) for f in client.compute(todo)]
    results = iter([np.asarray(r) for r in done])
    return [None if x is None else next(results) for x in xs]


class Chunker:
    """Random uneven chunks along every dimension (at most ``pieces`` per dimension), the
    same for arrays of one shape when ``same_for_shape`` (a primal and its tangent)."""

    def __init__(self, rng: np.random.Generator, pieces: int, same_for_shape: bool) -> None:
        self.rng, self.pieces, self.same = rng, pieces, same_for_shape
        self.chunks: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {}

    def __call__(self, x: np.ndarray) -> Any:
        chunks = self.chunks.get(x.shape) if self.same else None
        if chunks is None:
            chunks = self.chunks[x.shape] = tuple(self._split(n) for n in x.shape)
        return da.from_array(x, chunks=chunks)

    def _split(self, n: int) -> tuple[int, ...]:
        if n <= 1:
            return (n,)
        count = min(n - 1, int(self.rng.integers(1, self.pieces)))
        cuts = np.sort(self.rng.choice(np.arange(1, n), size=count, replace=False))
        return tuple(np.diff([0, *cuts, n]).tolist())


def structured(op: str, outs: list[Any]) -> Any:
    """Per-output arrays (or ``None``) shaped as the op's result, as ``ops.vjp`` takes them."""
    rule = RULES[op]
    if rule.returns_info:
        return (*outs, None)
    return tuple(outs) if rule.multi else outs[0]


def flat(result: Any) -> list[Any]:
    return list(result) if isinstance(result, tuple) else [result]


def assert_close(got: Any, want: Any, dtype: str) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype)
    tol = 1e-5 if dtype in ("float32", "complex64") else 1e-12
    np.testing.assert_allclose(
        got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max(initial=0))
    )


# -- values and derivatives against NumPy -------------------------------------------------

#: Larger batches per op, in random chunks: broadcasting, vectors, right solves, rectangles.
BIG: dict[str, tuple[C.Shape, ...]] = {
    "inv": (C.Shape("big", ((3, 40, 4, 4),)),),
    "inv_ex": (C.Shape("big", ((3, 40, 4, 4),)),),
    "solve": (
        C.Shape("big-broadcast", ((3, 1, 4, 4), (3, 40, 4, 2))),
        C.Shape("big-right-vector", ((3, 40, 4, 4), (4,)), {"left": False}),
    ),
    "solve_ex": (
        C.Shape("big-b-broadcast", ((3, 40, 4, 4), (4, 2))),
        C.Shape("big-pos", ((3, 40, 4, 4), (40, 4, 2)), {"assume_a": "pos"}),
    ),
    "tensorinv": (C.Shape("big", ((4, 6, 8, 3),), {"ind": 2}),),
    "tensorsolve": (C.Shape("big", ((2, 3, 2, 3), (2, 3))),),
    "lu_factor": (C.Shape("big-tall", ((3, 40, 5, 3),)),),
    "lu_factor_ex": (C.Shape("big-wide", ((40, 3, 5),)),),
    "lu_solve": (C.Shape("big-adjoint", ((3, 40, 4, 4), (40, 4, 2)), {"adjoint": True}),),
    "solve_triangular": (
        C.Shape("big-right", ((3, 40, 4, 4), (1, 40, 3, 4)), {"upper": True, "left": False}),
    ),
    "det": (C.Shape("big", ((3, 40, 4, 4),)),),
    "slogdet": (C.Shape("big", ((3, 40, 4, 4),)),),
    "cholesky": (C.Shape("big", ((3, 40, 4, 4),)),),
    "cholesky_ex": (C.Shape("big-upper", ((40, 3, 4, 4),), {"upper": True}),),
    "cholesky_solve": (C.Shape("big-broadcast", ((3, 1, 4, 4), (3, 40, 4, 2))),),
}

#: On the cluster: every op's larger batches. In this process (the synchronous scheduler,
#: each task costing microseconds instead of the cluster's milliseconds): every shape family
#: of the conformance kit, in up to 4 chunks per dimension, tangents chunked unlike primals.
CASES = [
    *(
        pytest.param(op, shape, dtype, True, id=f"cluster-{op}-{shape.id}-{dtype}")
        for op in RULES
        for shape in BIG[op]
        for dtype in ("float32", "complex128")
    ),
    *(
        pytest.param(op, shape, dtype, False, id=f"process-{op}-{shape.id}-{dtype}")
        for op in RULES
        for shape in C.SHAPES[op]
        for dtype in ("float64", "complex64")
    ),
]


@pytest.mark.parametrize(("op", "shape", "dtype", "on_cluster"), CASES)
def test_values_jvp_vjp_match_numpy(
    client: Any, op: str, shape: C.Shape, dtype: str, on_cluster: bool
) -> None:
    rule = RULES[op]
    rng = np.random.default_rng(zlib.crc32(f"{op}-{shape.id}-{dtype}".encode()))
    primals = NUMPY.inputs(op, shape, dtype, rng)
    params = shape.params
    tangents = tuple(
        None if integer else C.random_array(rng, p.shape, dtype)
        for p, integer in zip(primals, rule.integer)
    )
    ref_out, ref_tangent = NP.jvp(op, primals, tangents, **params)
    cotangents = [
        C.random_array(rng, np.shape(v), str(np.asarray(v).dtype)) if diff else None
        for v, diff in zip(checks.values(op, ref_out), rule.differentiable)
    ]
    _, ref_bars = NP.vjp(op, primals, structured(op, cotangents), **params)

    chunked = Chunker(rng, 3, True) if on_cluster else Chunker(rng, 5, False)
    lazy = tuple(chunked(p) for p in primals)
    out, tangent = OPS.jvp(
        op, lazy, tuple(t if t is None else chunked(t) for t in tangents), **params
    )
    out_again, bars = OPS.vjp(
        op,
        lazy,
        structured(op, [c if c is None else chunked(c) for c in cotangents]),
        **params,
    )
    values = flat(out)
    everything = [*values, *flat(tangent), *bars, *flat(out_again)]
    got = iter(compute(client if on_cluster else None, *everything))
    for v, ref in zip(values, flat(ref_out)):
        assert (v.shape, v.dtype, type(v._meta)) == (
            np.shape(ref),
            np.asarray(ref).dtype,
            np.ndarray,
        )
        assert_close(next(got), ref, dtype)
    for ref in flat(ref_tangent):
        t = next(got)
        assert (t is None) == (ref is None)
        if ref is not None:
            assert_close(t, ref, dtype)
    for ref in ref_bars:
        b = next(got)
        assert (b is None) == (ref is None)
        if ref is not None:
            assert_close(b, ref, dtype)
    for ref in flat(ref_out):  # ops.vjp's outputs too
        assert_close(next(got), ref, dtype)


def test_batch_chunks_are_kept_and_aligned_as_dask_aligns_them(client: Any) -> None:
    """Batch chunks of a and b refined together, as ``a + b`` on the batch would be;
    the matrix dimensions, chunked on input, in one chunk on output; values right."""
    rng = np.random.default_rng(1)
    a = C.well_conditioned(rng, (5, 1), 6, "float64")
    b = C.random_array(rng, (5, 12, 6, 3), "float64")
    A = da.from_array(a, chunks=(2, 1, 4, 3))
    B = da.from_array(b, chunks=(3, 5, 6, 3))
    x = OPS.solve(A, B)
    assert x.chunks[:2] == (A[..., 0, 0] + B[..., 0, 0]).chunks
    assert x.chunks[2:] == ((6,), (3,))
    (got,) = compute(client, x)
    assert_close(got, np.linalg.solve(a, b), "float64")


# -- lazy: metadata at call time, nothing computed ----------------------------------------


def untouchable(x: np.ndarray, chunks: Any) -> Any:
    """``x`` as a Dask array whose chunks raise if anything computes them."""

    def boom() -> None:
        raise AssertionError("computed at call time")

    block = dask.delayed(boom)()
    return da.from_delayed(block, shape=x.shape, dtype=x.dtype).rechunk(chunks)


@pytest.mark.parametrize("op", list(RULES))
def test_results_are_lazy_with_numpys_shapes_dtypes_and_metas(op: str) -> None:
    rule = RULES[op]
    shape = next(
        s for s in C.SHAPES[op] if s.family in ("broadcast", "batched", "4d", "lower-broadcast")
    )
    rng = np.random.default_rng(2)
    primals = NUMPY.inputs(op, shape, "complex64", rng)
    lazy = tuple(untouchable(p, 2) for p in primals)
    ref = NP.jvp(
        op, primals, tuple(None if i else p for p, i in zip(primals, rule.integer)), **shape.params
    )
    out = OPS.jvp(
        op, lazy, tuple(None if i else p for p, i in zip(lazy, rule.integer)), **shape.params
    )
    _, bars = OPS.vjp(
        op, lazy, structured(op, [v for v in checks.values(op, out[0])]), **shape.params
    )
    for got, want in zip([*flat(out[0]), *flat(out[1])], [*flat(ref[0]), *flat(ref[1])]):
        assert (got is None) == (want is None)
        if want is not None:
            assert isinstance(got, da.Array) and type(got._meta) is np.ndarray
            assert (got.shape, got.dtype, got._meta.ndim) == (
                np.shape(want),
                np.asarray(want).dtype,
                np.ndim(want),
            )
    for bar, p, integer in zip(bars, primals, rule.integer):
        assert bar is None if integer else (bar.shape, bar.dtype) == (p.shape, p.dtype)


# -- errors ----------------------------------------------------------------------------------


def numpy_error(fn: Any) -> Exception:
    with pytest.raises(Exception) as caught:
        fn()
    return caught.value


def singular_case(op: str) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """Inputs of ``op`` with one singular matrix, at batch index (4, 3) of a (6, 5) batch
    (in chunks of 2: the third block of each batch dimension), and the op's params.
    Without batch dimensions (tensorinv, tensorsolve) the one matrix is zero."""
    rng = np.random.default_rng(3)
    rule = RULES[op]
    if not rule.contract.batched:
        shape = next(s for s in C.SHAPES[op] if s.family == "3d")
        primals = NUMPY.inputs(op, shape, "float64", rng)
        return (np.zeros_like(primals[0]), *primals[1:]), shape.params
    params = {"upper": False} if op == "solve_triangular" else {}
    shapes = ((6, 5, 3, 3), (6, 5, 3, 2)) if "b" in rule.contract.inputs else ((6, 5, 3, 3),)
    primals = list(NUMPY.inputs(op, C.Shape("batched", shapes, params), "float64", rng))
    # U[1, 1] == 0 in its LU (or, for an LU or a triangle given, a zero at (1, 1)); the
    # first column is fine, so that the error must name step 1 of this one matrix.
    primals[0][4, 3] = np.diag([1.0, 0.0, 1.0])
    return tuple(primals), params


RAISING = [op for op, rule in RULES.items() if rule.raises and not rule.returns_info]


@pytest.mark.parametrize("op", RAISING)
def test_singular_raises_when_computed_with_numpys_message(client: Any, op: str) -> None:
    primals, params = singular_case(op)
    chunks = 2
    want = numpy_error(lambda: getattr(NP, op)(*primals, **params))
    assert isinstance(want, np.linalg.LinAlgError)
    lazy = tuple(da.from_array(p, chunks=chunks) for p in primals)
    x = getattr(OPS, op)(*lazy, **params)  # nothing raised yet
    rule = RULES[op]
    _, dx = OPS.jvp(op, lazy, tuple(None if i else p for p, i in zip(lazy, rule.integer)), **params)
    for lazy_result in (x, dx):
        with pytest.raises(np.linalg.LinAlgError) as got:
            compute(client, *flat(lazy_result))
        assert str(got.value) == str(want)


EX = [op for op, rule in RULES.items() if rule.returns_info]


@pytest.mark.parametrize("op", EX)
def test_info_is_a_lazy_integer_array(client: Any, op: str) -> None:
    primals, params = singular_case(op.removesuffix("_ex"))
    chunks = 2
    want = getattr(NP, op)(*primals, **params)[-1]
    info = getattr(OPS, op)(*(untouchable(p, chunks) for p in primals), **params)[-1]
    assert (info.shape, info.dtype) == (want.shape, want.dtype) and want.any()
    info = getattr(OPS, op)(*(da.from_array(p, chunks=chunks) for p in primals), **params)[-1]
    (got,) = compute(client, info)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", list(RULES))
def test_bad_input_raises_at_call_time_as_on_numpy(op: str) -> None:
    """An integer input, and (ops with b) a b that does not fit: NumPy's error and message,
    with arrays that cannot be computed."""
    rule = RULES[op]
    shape = next(s for s in C.SHAPES[op] if s.family in ("batched", "3d", "lower-batched"))
    primals = NUMPY.inputs(op, shape, "float64", np.random.default_rng(5))
    bad = [
        tuple(p if i else p.astype(np.int64) for p, i in zip(primals, rule.integer)),
    ]
    if "b" in rule.contract.inputs:
        bad.append((*primals[:-1], np.ones((4, 5, 2))))
    for args in bad:
        want = numpy_error(lambda args=args: getattr(NP, op)(*args, **shape.params))
        with pytest.raises(type(want)) as got:
            getattr(OPS, op)(*(untouchable(x, 2) for x in args), **shape.params)
        assert str(got.value) == str(want)


@pytest.mark.parametrize("op", list(RULES))
def test_the_kits_error_checks(client: Any, op: str) -> None:
    results = list(checks.check_errors(Harness("dask"), op))
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]


def test_unknown_chunk_sizes_are_refused() -> None:
    a = da.from_array(C.well_conditioned(np.random.default_rng(6), (6,), 3, "float64"), chunks=2)
    some = a[a[:, 0, 0] > 0]  # a boolean mask: Dask does not know the chunk sizes
    with pytest.raises(
        ValueError, match=r"invad\.inv: `a` has unknown chunk sizes.*compute_chunk_sizes"
    ):
        OPS.inv(some)


# -- the factorization once per block ---------------------------------------------------------


def _count_forward_blocks(dask_worker: Any = None) -> int:
    """On a worker: count the forward tasks run from now on (patches _chunks.forward)."""
    from invad.backends.dask import _chunks as chunks

    real = getattr(chunks.forward, "__wrapped__", chunks.forward)
    counter = {"n": 0}

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["n"] += 1
        return real(*args, **kwargs)

    counted.__wrapped__ = real  # type: ignore[attr-defined]
    counted.counter = counter  # type: ignore[attr-defined]
    chunks.forward = counted
    return 0


def _forward_count(dask_worker: Any = None) -> int:
    from invad.backends.dask import _chunks as chunks

    count = getattr(chunks.forward, "counter", {"n": 0})["n"]
    chunks.forward = getattr(chunks.forward, "__wrapped__", chunks.forward)
    return int(count)


@pytest.mark.parametrize("derivative", ["jvp", "vjp"])
def test_forward_runs_once_per_block_with_its_derivative(client: Any, derivative: str) -> None:
    """Counted on the workers: as many forward tasks as blocks, and one kernel solve each."""
    rng = np.random.default_rng(7)
    a = C.well_conditioned(rng, (30,), 4, "float64")
    b = C.random_array(rng, (30, 4, 2), "float64")
    A, B = da.from_array(a, chunks=(7, 4, 4)), da.from_array(b, chunks=(7, 4, 2))
    blocks = A.numblocks[0]
    if derivative == "jvp":
        x, dx = OPS.jvp("solve", (A, B), (A, B))
        wanted = [x, dx]
    else:
        x, (abar, bbar) = OPS.vjp("solve", (A, B), B)
        wanted = [x, abar, bbar]
    graph: dict[Any, Any] = {}
    for w in wanted:
        graph.update(dict(w.__dask_graph__()))
    forward = [k for k in graph if key_split(k) == "invad-solve"]
    assert len(forward) == blocks
    client.run(_count_forward_blocks)
    try:
        compute(client, *wanted)
    finally:
        counts = client.run(_forward_count)
    assert sum(counts.values()) == blocks


def test_one_kernel_factorization_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (synchronous scheduler), the kernels counted: one ``solve`` per block for
    value, JVP and VJP together; every derivative solve reuses it (``lu_solve``)."""
    calls: list[str] = []
    real = NP.la

    def counting(name: str) -> Any:
        kernel = getattr(real, name)

        def run(*args: Any) -> Any:
            if args[0].size:  # the call-time metadata runs see empty arrays
                calls.append(name)
            return kernel(*args)

        return run

    la = dataclasses.replace(real, **{n: counting(n) for n in ("solve", "lu_factor", "inv")})
    monkeypatch.setattr(
        _chunks, "install", lambda name: types.SimpleNamespace(la=la, xp=NP.xp, backend=NP.backend)
    )
    rng = np.random.default_rng(8)
    a = C.well_conditioned(rng, (30,), 4, "float64")
    b = C.random_array(rng, (30, 4, 2), "float64")
    A, B = da.from_array(a, chunks=(7, 4, 4)), da.from_array(b, chunks=(7, 4, 2))
    x, dx = OPS.jvp("solve", (A, B), (A, B))
    _, (abar, bbar) = OPS.vjp("solve", (A, B), B)
    dask.compute(x, dx, abar, bbar, scheduler="sync")
    assert calls == ["solve"] * A.numblocks[0]


# -- CuPy-backed blocks: the dispatch, on a stand-in ---------------------------------------


class StandinCupyArray(np.ndarray):
    """The array type of the stand-in's blocks: not NumPy's own ndarray."""


def test_cupy_blocks_go_to_cupys_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks that are CuPy arrays (here a stand-in type) are computed, and their metas
    found, by ``invad.install("cupy")``'s kernels, on the block's device; NumPy blocks by
    NumPy's. The stand-in's "CuPy" ops are NumPy's kernels, recording each use."""
    used: list[tuple[str, str]] = []

    class Recording:
        def __init__(self, name: str, ops: Any) -> None:
            self.name, self.la, self.xp, self._ops = name, ops.la, ops.xp, ops
            self.backend = self

        linalg_error = np.linalg.LinAlgError

        def on_device_of(self, x: Any) -> Any:
            used.append((self.name, type(x).__name__))
            return contextlib.nullcontext()

    numpy_ops, cupy_ops = Recording("numpy", NP), Recording("cupy", NP)
    monkeypatch.setattr(_chunks, "is_cupy_array", lambda x: isinstance(x, StandinCupyArray))
    monkeypatch.setattr(
        _chunks, "install", lambda name: {"numpy": numpy_ops, "cupy": cupy_ops}[name]
    )
    rng = np.random.default_rng(9)
    a = C.well_conditioned(rng, (6,), 3, "float64")
    b = C.random_array(rng, (6, 3, 2), "float64")
    for cupy in (True, False):
        used.clear()
        A = da.from_array(a.view(StandinCupyArray) if cupy else a, chunks=(2, 3, 3), asarray=False)
        B = da.from_array(b.view(StandinCupyArray) if cupy else b, chunks=(2, 3, 2), asarray=False)
        x, dx = OPS.jvp("solve", (A, B), (A, None))
        _, (abar, _) = OPS.vjp("solve", (A, B), x)
        got = dask.compute(x, dx, abar, scheduler="sync")
        ref_x, ref_dx = NP.jvp("solve", (a, b), (a, None))
        _, (ref_abar, _) = NP.vjp("solve", (a, b), ref_x)
        for g, r in zip(got, (ref_x, ref_dx, ref_abar)):
            assert_close(np.asarray(g), r, "float64")
        name = "cupy" if cupy else "numpy"
        assert {u[0] for u in used} == {name}, used
        # two metadata runs at call time per op call, then per block a forward, a jvp, a vjp
        assert len(used) >= 3 * 3


# -- the backend: registration, availability, dispatch --------------------------------------


def test_listed_available_without_importing_dask_array() -> None:
    code = (
        "import sys, invad; row = next(r for r in invad.backends() if r.name == 'dask'); "
        "print(row.available, row.version is not None, 'dask.array' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


def test_without_dask_it_is_unavailable_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"dask is not installed.*pip install 'invad\[dask\]'"):
        dask_backend.DaskBackend().load()
    registry = invad.registry.Registry()
    row = next(r for r in registry.infos() if r.name == "dask")
    assert not row.available and "pip install 'invad[dask]'" in row.reason
    with pytest.raises(invad.BackendNotFoundError, match="invad\\[dask\\]"):
        registry.backend("dask")


def test_top_level_ops_dispatch_dask_arrays_and_adopt_numpy_ones(client: Any) -> None:
    rng = np.random.default_rng(10)
    a = C.well_conditioned(rng, (4,), 3, "float64")
    b = C.random_array(rng, (4, 3, 1), "float64")
    x = invad.solve(da.from_array(a, chunks=2), b)
    assert isinstance(x, da.Array)
    (got,) = compute(client, x)
    assert_close(got, np.linalg.solve(a, b), "float64")
    with pytest.raises(
        TypeError, match=r"invad\.inv: `a` is a list; the 'dask' backend takes dask\.array\.Array"
    ):
        OPS.inv([[1.0]])
