"""The conformance checks: each returns :class:`CheckResult` rows, the CLI and pytest read them.

Every check compares a backend's result with an independent reference
computed here in NumPy at double precision: reconstruction of the input
(``A B ~ I``, ``A X ~ B``), central finite differences, the dot-product
identity between JVP and VJP, and the oracle data.
"""

from __future__ import annotations

import copy
import functools
import math
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .. import install
from ..ops import Ops
from ..rules import RULES
from . import cases as C
from .oracle import Replay, load_cases, replays

#: Forward and adjoint tolerances in units of the dtype's machine epsilon.
EPS = {d: float(np.finfo(d).eps) for d in C.DTYPES}
WIDE = {
    "float32": "float64",
    "float64": "float64",
    "complex64": "complex128",
    "complex128": "complex128",
}
FD_STEP = 1e-6
#: The single-precision twin of each double-precision dtype.
NARROW = {"float64": "float32", "complex128": "complex64"}
FD_RTOL = {"float32": 2e-3, "complex64": 2e-3, "float64": 1e-6, "complex128": 1e-6}


@dataclass(frozen=True)
class CheckResult:
    """One check on one case: the error found, the tolerance, and whether it passed."""

    op: str
    check: str
    case: str
    error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)  # NaN fails


class Harness:
    """An installed backend and the conversions between it and NumPy.

    A backend may be unable to hold some of the kit's dtypes as configured (JAX
    without 64-bit mode holds no float64 or complex128): :meth:`unsupported`
    names them with the backend's own reason. The kit then runs the cases of the
    other dtypes, builds its double-precision references in NumPy, and checks
    error behaviour in the widest dtypes the backend holds.
    """

    # Class-level defaults: a subclass that sets ``ops``, ``backend`` and ``device``
    # itself, without calling ``__init__``, keeps working.
    _unsupported: dict[str, str] | None = None
    #: dtype -> the dtype that :meth:`put` stores it as (see :meth:`narrowed`).
    _narrow: Mapping[str, str] = MappingProxyType({})

    def __init__(self, backend: str | None = None, device: Any = None) -> None:
        self.ops: Ops = install(backend, device=device)
        self.backend = self.ops.backend
        self.device = self.ops.device

    def put(self, x: np.ndarray | None) -> Any:
        if x is None:
            return None
        if self._narrow:
            to = self._narrow.get(x.dtype.name)
            if to is not None:
                x = x.astype(to)
        return self.backend.from_numpy(x, self.device)

    def get(self, x: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(x))

    def inputs(
        self, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, ...]:
        """The inputs of one case as NumPy arrays, as the op takes them: for ``lu_solve``
        ``(LU, pivots, b)`` from this backend's own ``lu_factor`` (its pivot convention)."""
        primals = C.primals(op, shape, dtype, rng)
        if op != "lu_solve":
            return primals
        a, b = primals
        lu, pivots = self.ops.lu_factor(self.put(a))
        return self.get(lu), self.get(pivots), b

    def call(self, op: str, primals: tuple[np.ndarray, ...], params: dict[str, Any]) -> Any:
        """The op on ``primals``: its value outputs (no ``info``) as NumPy arrays, a tuple; on
        NumPy for a dtype the backend cannot hold (the finite-difference references at
        double precision)."""
        unsupported = self.unsupported()
        if unsupported and any(x.dtype.name in unsupported for x in primals):
            return _numpy_reference().call(op, primals, params)
        out = getattr(self.ops, op)(*(self.put(x) for x in primals), **params)
        return tuple(self.get(v) for v in values(op, out))

    def unsupported(self) -> dict[str, str]:
        """The kit's dtypes that this backend cannot hold as configured, with its reason.

        Found once by asking the backend to hold an array of each: a backend
        refuses a dtype with ``TypeError`` (JAX without 64-bit mode says how to
        turn it on). Empty for a backend that holds every dtype.
        """
        if self._unsupported is None:
            found = {}
            for dtype in C.DTYPES:
                try:
                    self.backend.from_numpy(np.zeros(1, dtype=dtype), self.device)
                except TypeError as exc:
                    found[dtype] = str(exc)
            self._unsupported = found
        return self._unsupported

    def narrowed(self) -> Harness:
        """This harness, storing the dtypes it cannot hold as the single-precision twin.

        For the error-behaviour checks, whose properties (which exception, which
        message, where ``info`` and NaN land) do not depend on precision.
        """
        narrow = {
            d: NARROW[d]
            for d in self.unsupported()
            if d in NARROW and NARROW[d] not in self.unsupported()
        }
        if not narrow:
            return self
        twin = copy.copy(self)
        twin._narrow = narrow
        return twin


@functools.cache
def _numpy_reference() -> Harness:
    return Harness("numpy")


# -- helpers --------------------------------------------------------------------


def values(op: str, out: Any) -> tuple[Any, ...]:
    """An op's result (or its tangent or cotangent) without ``info``, as a tuple."""
    rule = RULES[op]
    if rule.returns_info:
        return tuple(out[:-1])
    return tuple(out) if rule.multi else (out,)


def _value(op: str, out: Any) -> Any:
    """The first value output: the inverse, the solution, LU, the determinant."""
    return values(op, out)[0]


def _structured(op: str, outs: tuple[Any, ...]) -> Any:
    """Per-output arrays (or ``None``) shaped as the op's result: ``ops.vjp``'s cotangents."""
    rule = RULES[op]
    if rule.returns_info:
        return (*outs, None)
    return tuple(outs) if rule.multi else outs[0]


def _max(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:
        return math.inf
    return _max(got - ref) / max(_max(ref), 1.0)


def _ratio(num: float, den: float) -> float:
    return num / den if num else 0.0


def _inner(x: np.ndarray, y: np.ndarray) -> float:
    """The real inner product Re tr(x^H y) = Re sum(conj(x) * y)."""
    return float(np.real(np.vdot(np.asarray(x, np.complex128), np.asarray(y, np.complex128))))


def _real_dtype(dtype: str) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)


def output_dtypes(op: str, dtype: str) -> tuple[str | None, ...]:
    """The dtype of each value output for input ``dtype``; ``None`` for integer ones."""
    if op in ("lu_factor", "lu_factor_ex"):
        return dtype, None
    if op == "slogdet":
        return dtype, _real_dtype(dtype)
    return (dtype,)


def unpack_lu(lu: np.ndarray, pivots: np.ndarray, base: int) -> np.ndarray:
    """``A = P L U`` from LAPACK's packed factor and row interchanges counted from ``base``."""
    m, n = lu.shape[-2:]
    k = min(m, n)
    lower = np.tril(lu[..., :, :k], -1) + np.eye(m, k)
    a = lower @ np.triu(lu[..., :k, :])
    a = np.array(np.broadcast_to(a, lu.shape))
    for index in np.ndindex(*lu.shape[:-2]):
        for j in reversed(range(k)):  # P: the interchanges undone in reverse order
            # Named, not written in the subscript: mypy reads `a[(*i, j)]` as 3.11's `a[*i, j]`.
            row_j = (*index, j)
            row_p = (*index, int(pivots[row_j]) - base)
            a[row_j], a[row_p] = a[row_p].copy(), a[row_j].copy()
    return a


def reconstruction_error(
    op: str, primals: tuple[np.ndarray, ...], x: np.ndarray, params: dict[str, Any]
) -> float:
    """How far ``x`` is from solving its problem, relative to the sizes involved."""
    p = tuple(np.asarray(v, np.complex128) for v in primals)
    x = np.asarray(x, np.complex128)
    if op in ("inv", "inv_ex", "tensorinv"):
        a = p[0]
        if op == "tensorinv":
            m = math.prod(a.shape[: params["ind"]])
            a, x = a.reshape(m, m), x.reshape(m, m)
        residual = a @ x - np.eye(a.shape[-1])
        return _ratio(_max(residual), _max(a) * _max(x) * max(a.shape[-1], 1) + 1)
    a, b = p
    if op == "tensorsolve":
        axes = params.get("axes") or ()
        a = np.moveaxis(a, axes, range(a.ndim - len(axes), a.ndim)) if axes else a
        residual = np.tensordot(a, x, axes=x.ndim) - b
        return _ratio(_max(residual), _max(a) * _max(x) * max(x.size, 1) + _max(b))
    left = params.get("left", True)
    if b.ndim == 1:
        b, x = (b[:, None], x[..., None]) if left else (b[None, :], x[..., None, :])
    residual = (a @ x if left else x @ a) - b
    return _ratio(_max(residual), _max(a) * _max(x) * max(a.shape[-1], 1) + _max(b))


def forward_error(
    h: Harness, op: str, primals: tuple[np.ndarray, ...], outs: tuple[np.ndarray, ...], params: Any
) -> float:
    """How far the outputs are from what they should be: a reconstruction of the problem,
    or for the determinants NumPy's own value at double precision."""
    if op in ("lu_factor", "lu_factor_ex"):
        lu, pivots = outs
        a = np.asarray(primals[0], np.complex128)
        rebuilt = unpack_lu(np.asarray(lu, np.complex128), pivots, h.ops.la.pivot_base)
        k = min(a.shape[-2:])
        return _ratio(_max(rebuilt - a), _max(lu) ** 2 * max(k, 1) + _max(a))
    if op == "lu_solve":
        lu, pivots, b = primals
        a = unpack_lu(np.asarray(lu, np.complex128), pivots, h.ops.la.pivot_base)
        if params.get("adjoint", False):
            a = np.conj(np.swapaxes(a, -1, -2))
        return reconstruction_error("solve", (a, b), outs[0], {"left": params.get("left", True)})
    if op == "solve_triangular":
        a, b = primals
        t = np.triu(a) if params["upper"] else np.tril(a)
        if params.get("unitriangular"):
            n = a.shape[-1]
            t = np.where(np.eye(n, dtype=bool), 1, t)
        return reconstruction_error("solve", (t, b), outs[0], {"left": params.get("left", True)})
    if op in ("cholesky", "cholesky_ex"):
        (c,) = outs[:1]
        a = np.asarray(primals[0], np.complex128)
        c = np.asarray(c, np.complex128)
        upper = params.get("upper", False)
        rebuilt = (
            np.conj(np.swapaxes(c, -1, -2)) @ c if upper else c @ np.conj(np.swapaxes(c, -1, -2))
        )
        triangle = np.triu(c) if upper else np.tril(c)
        diag = np.diagonal(c, axis1=-2, axis2=-1)
        if not np.array_equal(triangle, c) or (diag.size and not (diag.real > 0).all()):
            return math.inf  # not triangular, or not the factor with a positive diagonal
        return _ratio(_max(rebuilt - a), _max(a) + 1)
    if op == "cholesky_solve":
        c, b = (np.asarray(v, np.complex128) for v in primals)
        ch = np.conj(np.swapaxes(c, -1, -2))
        a = ch @ c if params.get("upper", False) else c @ ch
        return reconstruction_error("solve", (a, b), outs[0], {})
    if op == "det":
        ref = np.linalg.det(primals[0].astype(WIDE[str(primals[0].dtype)]))
        return _relative(np.asarray(outs[0], ref.dtype), ref)
    if op == "slogdet":
        sign, logabsdet = np.linalg.slogdet(primals[0].astype(WIDE[str(primals[0].dtype)]))
        return max(_relative(outs[0], sign), _relative(outs[1], logabsdet))
    return reconstruction_error(op, primals, outs[0], params)


def _tangents(
    op: str,
    primals: tuple[np.ndarray, ...],
    dtype: str,
    rng: np.random.Generator,
    params: dict[str, Any],
) -> tuple[np.ndarray | None, ...]:
    """Random tangents for the floating inputs (Hermitian for a Hermitian input), ``None``
    for the integer ones (pivots)."""
    hermitian = C.hermitian_inputs(op, params)
    return tuple(
        None
        if integer
        else C.hermitian(C.random_array(rng, x.shape, dtype))
        if i in hermitian
        else C.random_array(rng, x.shape, dtype)
        for i, (x, integer) in enumerate(zip(primals, RULES[op].integer))
    )


def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(WIDE[str(x.dtype)]) if x.dtype.kind in "fc" else x


# -- the checks -------------------------------------------------------------------


def check_forward(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> CheckResult:
    primals = h.inputs(op, shape, dtype, rng)
    out = getattr(h.ops, op)(*(h.put(x) for x in primals), **shape.params)
    outs = tuple(h.get(v) for v in values(op, out))
    error = forward_error(h, op, primals, outs, shape.params)
    problems = []
    for got, expected in zip(outs, output_dtypes(op, dtype)):
        if (expected is None and got.dtype.kind not in "iu") or (
            expected is not None and str(got.dtype) != expected
        ):
            problems.append(f"dtype {got.dtype}, expected {expected or 'an integer dtype'}")
    if h.backend.device_of(_value(op, out)) != h.backend.device_of(h.put(primals[0])):
        problems.append("result on another device than its input")
    if RULES[op].returns_info:
        info = h.get(out[-1])
        batch = primals[0].shape[:-2]
        if info.shape != batch or info.dtype.kind not in "iu" or info.any():
            problems.append(f"info {info!r}, expected zeros of shape {batch}")
    if problems:
        error = math.inf
    return CheckResult(
        op, "forward", f"{shape.id} {dtype}", error, 1000 * EPS[dtype], "; ".join(problems)
    )


def check_jvp(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> CheckResult:
    """JVP against central finite differences of the op at double precision."""
    primals = h.inputs(op, shape, dtype, rng)
    tangents = _tangents(op, primals, dtype, rng, shape.params)
    _, tangent_out = h.ops.jvp(
        op, tuple(h.put(x) for x in primals), tuple(h.put(t) for t in tangents), **shape.params
    )
    p = tuple(_wide(x) for x in primals)
    t = tuple(None if v is None else _wide(v) for v in tangents)
    plus = h.call(
        op, tuple(x if v is None else x + FD_STEP * v for x, v in zip(p, t)), shape.params
    )
    minus = h.call(
        op, tuple(x if v is None else x - FD_STEP * v for x, v in zip(p, t)), shape.params
    )
    errors, problems = [], []
    expected = output_dtypes(op, dtype)
    for k, (dv, diff) in enumerate(zip(values(op, tangent_out), RULES[op].differentiable)):
        if not diff:
            if dv is not None:
                problems.append(f"output {k} is not differentiable but has a tangent")
            continue
        got = h.get(dv)
        if str(got.dtype) != expected[k]:
            problems.append(f"tangent dtype {got.dtype}, expected {expected[k]}")
        fd = (plus[k] - minus[k]) / (2 * FD_STEP)
        errors.append(_relative(got.astype(fd.dtype), fd))
    error = math.inf if problems else max(errors, default=0.0)
    return CheckResult(
        op, "jvp-fd", f"{shape.id} {dtype}", error, FD_RTOL[dtype], "; ".join(problems)
    )


def check_vjp(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> CheckResult:
    """The dot-product test <ybar, J v> = <J* ybar, v> under Re tr(X^H Y)."""
    rule = RULES[op]
    primals = h.inputs(op, shape, dtype, rng)
    tangents = _tangents(op, primals, dtype, rng, shape.params)
    put_primals = tuple(h.put(x) for x in primals)
    out, tangent_out = h.ops.jvp(op, put_primals, tuple(h.put(t) for t in tangents), **shape.params)
    outs = tuple(h.get(v) for v in values(op, out))
    ybars = tuple(
        C.random_array(rng, v.shape, str(v.dtype)) if diff else None
        for v, diff in zip(outs, rule.differentiable)
    )
    _, xbars = h.ops.vjp(
        op, put_primals, _structured(op, tuple(h.put(y) for y in ybars)), **shape.params
    )
    jvs = tuple(None if d is None else h.get(d) for d in values(op, tangent_out))
    pairs_out = [(y, jv) for y, jv in zip(ybars, jvs) if y is not None and jv is not None]
    pairs_in = [
        (h.get(xb), v) for xb, v in zip(xbars, tangents) if v is not None and xb is not None
    ]
    lhs = sum((_inner(y, jv) for y, jv in pairs_out), 0.0)
    rhs = sum((_inner(xb, v) for xb, v in pairs_in), 0.0)
    scale = sum(np.linalg.norm(y) * np.linalg.norm(jv) for y, jv in pairs_out) + sum(
        np.linalg.norm(xb) * np.linalg.norm(v) for xb, v in pairs_in
    )
    error = abs(lhs - rhs) / scale if scale else abs(lhs - rhs)
    bad = []
    for i, (xb, x, integer) in enumerate(zip(xbars, primals, rule.integer)):
        if integer:
            if xb is not None:
                bad.append(f"integer input {i} got a cotangent")
            continue
        got = h.get(xb)
        if got.dtype != x.dtype or got.shape != x.shape:
            bad.append(
                f"cotangent of input {i}: {got.dtype}{got.shape}, expected {x.dtype}{x.shape}"
            )
    return CheckResult(
        op,
        "vjp-adjoint",
        f"{shape.id} {dtype}",
        math.inf if bad else error,
        100 * EPS[dtype],
        "; ".join(bad),
    )


def native_function(
    h: Harness, op: str, put_primals: tuple[Any, ...], params: dict[str, Any]
) -> tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...]]:
    """The installed op as a function of its floating inputs (integer ones held fixed),
    returning its differentiable outputs (one array, or a tuple of several): what a
    framework's own AD differentiates. Also the positions of those inputs and outputs."""
    rule = RULES[op]
    installed = getattr(h.ops, op)
    floats = tuple(i for i, integer in enumerate(rule.integer) if not integer)
    diffs = tuple(k for k, d in enumerate(rule.differentiable) if d)

    def fn(*xs: Any) -> Any:
        args = list(put_primals)
        for i, x in zip(floats, xs):
            args[i] = x
        outs = values(op, installed(*args, **params))
        picked = tuple(outs[k] for k in diffs)
        return picked if len(picked) > 1 else picked[0]

    return fn, floats, diffs


def check_native(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> Iterator[CheckResult]:
    """The framework's own JVP and VJP of the installed op equal the rules' ``ops.jvp/vjp``."""
    if not h.backend.native_ad:
        return
    primals = h.inputs(op, shape, dtype, rng)
    tangents = _tangents(op, primals, dtype, rng, shape.params)
    put_primals = tuple(h.put(x) for x in primals)
    put_tangents = tuple(h.put(t) for t in tangents)
    fn, floats, diffs = native_function(h, op, put_primals, shape.params)
    out, rule_jvp = h.ops.jvp(op, put_primals, put_tangents, **shape.params)
    outs = tuple(h.get(v) for v in values(op, out))
    ybars = [C.random_array(rng, outs[k].shape, str(outs[k].dtype)) for k in diffs]
    cts = [None] * len(outs)
    for k, y in zip(diffs, ybars):
        cts[k] = h.put(y)
    _, rule_vjp = h.ops.vjp(op, put_primals, _structured(op, tuple(cts)), **shape.params)
    float_primals = tuple(put_primals[i] for i in floats)
    native_jvp = h.backend.native_jvp(fn, float_primals, tuple(put_tangents[i] for i in floats))
    put_ybars = tuple(h.put(y) for y in ybars)
    native_vjp = h.backend.native_vjp(
        fn, float_primals, put_ybars if len(put_ybars) > 1 else put_ybars[0]
    )
    case = f"{shape.id} {dtype}"
    tol = 1000 * EPS[dtype]
    if native_jvp is not None:
        native = native_jvp if len(diffs) > 1 else (native_jvp,)
        rule_values = values(op, rule_jvp)
        error = max(
            (_relative(h.get(n), h.get(rule_values[k])) for n, k in zip(native, diffs)),
            default=0.0,
        )
        yield CheckResult(op, "native-ad", f"{case} jvp", error, tol)
    if native_vjp is not None:
        error = max(
            (_relative(h.get(n), h.get(rule_vjp[i])) for n, i in zip(native_vjp, floats)),
            default=0.0,
        )
        yield CheckResult(op, "native-ad", f"{case} vjp", error, tol)


def check_oracle(
    h: Harness, case_id: str, r: Replay, rtol: float, atol: float
) -> Iterator[CheckResult]:
    """JVP and VJP against the oracle's PyTorch reference, within the case's tolerances."""
    primals = tuple(h.put(x) for x in r.primals_for(h.ops.la.pivot_base))
    tangents = tuple(h.put(t) for t in r.tangents)
    _, tangent_out = h.ops.jvp(r.op, primals, tangents, **r.params)
    rule = RULES[r.op]
    several = rule.multi
    cts = r.cotangent if several else (r.cotangent,)
    _, xbars = h.ops.vjp(r.op, primals, _structured(r.op, tuple(h.put(c) for c in cts)), **r.params)
    refs = r.jvp if several else (r.jvp,)
    pairs = {
        "oracle-jvp": [
            (h.get(got), ref)
            for got, ref in zip(values(r.op, tangent_out), refs)
            if ref is not None
        ],
        "oracle-vjp": [(h.get(x), ref) for x, ref in zip(xbars, r.vjp) if ref is not None],
    }
    for check, items in pairs.items():
        error = max((_allclose_ratio(got, ref, rtol, atol) for got, ref in items), default=0.0)
        yield CheckResult(r.op, check, case_id, error, 1.0, "error / (atol + rtol |ref|)")


def _allclose_ratio(got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> float:
    """max |got - ref| / (atol + rtol |ref|): at most 1 exactly when np.allclose holds."""
    if got.shape != ref.shape:
        return math.inf
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref) / (atol + rtol * np.abs(ref))))


# -- error behaviour ---------------------------------------------------------------


def _expect(
    op: str,
    name: str,
    action: Callable[[], Any],
    error: type[BaseException] | None,
    words: tuple[str, ...] = (),
) -> CheckResult:
    """Run ``action``: it passes if it raises ``error`` with every word in the message.

    With ``error=None`` it passes if it does not raise.
    """
    try:
        action()
    except Exception as exc:
        ok = error is not None and isinstance(exc, error) and all(w in str(exc) for w in words)
        return CheckResult(
            op, "errors", name, 0.0 if ok else 1.0, 0.0, f"{type(exc).__name__}: {exc}"
        )
    return CheckResult(
        op, "errors", name, 0.0 if error is None else 1.0, 0.0, "no exception" if error else ""
    )


#: Ops that take a square matrix (or factor) first; the ones among them that raise on a
#: singular one (their ``_ex`` twins report it in ``info``).
_SQUARE = (
    "inv",
    "inv_ex",
    "solve",
    "solve_ex",
    "lu_solve",
    "solve_triangular",
    "det",
    "slogdet",
    "cholesky",
    "cholesky_ex",
    "cholesky_solve",
)
_RHS = ("solve", "solve_ex", "lu_solve", "solve_triangular", "cholesky_solve")
#: Ops whose factorization flags NaN as LAPACK's potrf does (info > 0): they raise on it.
_NAN_FLAGGED = ("cholesky",)


def check_errors(h: Harness, op: str) -> Iterator[CheckResult]:
    rng = np.random.default_rng(7)
    fn = getattr(h.ops, op)
    rule = RULES[op]
    shape = next(s for s in C.SHAPES[op] if s.family in ("batched", "3d", "lower-batched"))
    good = h.inputs(op, shape, "float64", rng)
    params = shape.params
    ex = rule.returns_info

    def call(*xs: np.ndarray, **kw: Any) -> Callable[[], Any]:
        return lambda: fn(*(h.put(x) for x in xs), **{**params, **kw})

    def computed(*xs: np.ndarray) -> Callable[[], None]:
        """The call, its values read: a lazy backend (Dask) raises only then."""

        def run() -> None:
            for v in values(op, call(*xs)()):
                h.get(v)

        return run

    integer = tuple(
        x if is_int else np.ones(x.shape, dtype=np.int64) for x, is_int in zip(good, rule.integer)
    )
    yield _expect(op, "integer dtype", call(*integer), TypeError, (op, "dtype"))
    if op in _SQUARE:
        yield _expect(
            op, "non-square a", call(np.ones((4, 3, 4)), *good[1:]), ValueError, (op, "square")
        )
    if op in _SQUARE or op in ("lu_factor", "lu_factor_ex"):
        singular = good[0].copy()
        singular[1] = 0.0  # batch element 1 singular, at U[0, 0]
        zeros = (singular, *good[1:])
        if ex:

            def info_of() -> None:
                info = h.get(fn(*(h.put(x) for x in zeros), **params)[-1])
                if not (info[1] > 0 and not info[0] and not info[2:].any()):
                    raise AssertionError(f"info {info}")

            yield _expect(op, "singular gives info", info_of, None)
        elif not rule.raises:
            yield _expect(op, "singular does not raise", call(*zeros), None)
        elif h.backend.raises_on_singular:
            raises = computed(*zeros)
            yield _expect(op, "singular raises", raises, h.backend.linalg_error, (op, "(1,)"))
        nan = good[0].copy()
        nan[0, 0, 0] = np.nan
        if op in _NAN_FLAGGED and h.backend.raises_on_singular:
            yield _expect(
                op, "NaN raises", computed(nan, *good[1:]), h.backend.linalg_error, (op, "(0,)")
            )
            return

        def propagates() -> None:
            results = values(op, fn(*(h.put(x) for x in (nan, *good[1:])), **params))
            outs = [h.get(v) for v in results if h.get(v).dtype.kind in "fc"]
            # slogdet's sign of a NaN matrix may stay +-1 (LAPACK): some output must be NaN.
            if not any(np.isnan(o[0]).any() for o in outs) or any(
                np.isnan(o[1:]).any() for o in outs
            ):
                raise AssertionError("NaN did not stay in its batch element")

        yield _expect(op, "NaN propagates", propagates, None)
    if op in _RHS:
        *head, _ = good
        yield _expect(
            op, "b does not fit", call(*head, np.ones((4, 5, 2))), ValueError, (op, "does not fit")
        )
        yield _expect(
            op,
            "batches do not broadcast",
            call(*head, np.ones((3, 3, 2))),
            ValueError,
            (op, "broadcast"),
        )
    if op in ("solve", "solve_ex"):
        yield _expect(
            op,
            "assume_a not accepted",
            call(*good, assume_a="sym"),
            ValueError,
            (op, "assume_a", "'gen', 'pos'"),
        )
    if op == "lu_solve":
        lu, pivots, b = good
        yield _expect(
            op,
            "pivots of the wrong shape",
            call(lu, pivots[..., :2], b),
            ValueError,
            (op, "pivots", str(tuple(pivots[..., :2].shape))),
        )
        yield _expect(
            op,
            "pivots of the wrong dtype",
            call(lu, pivots.astype(np.float64), b),
            ValueError,
            (op, "pivots", "integer"),
        )
    if op == "solve_triangular":
        yield _expect(
            op,
            "upper is required",
            lambda: fn(*(h.put(x) for x in good)),
            TypeError,
            (op, "upper"),
        )
    if op == "tensorinv":
        yield _expect(op, "ind does not fit", call(good[0], ind=1), ValueError, (op, "ind"))
        yield _expect(op, "ind out of range", call(good[0], ind=0), ValueError, (op, "ind"))
    if op == "tensorsolve":
        yield _expect(op, "axes do not fit", call(*good, axes=(0,)), ValueError, (op, "axes"))
        yield _expect(
            op, "b does not fit", call(good[0], np.ones((4, 2))), ValueError, (op, "does not fit")
        )


# -- everything ----------------------------------------------------------------------

CHECKS = ("forward", "jvp-fd", "vjp-adjoint", "native-ad", "oracle-jvp", "oracle-vjp", "errors")


#: What ``run_all`` reports as it goes: checks done, checks in all, what runs now.
ProgressCallback = Callable[[int, int, str], None]


def run_all(
    backend: str | None = None,
    device: Any = None,
    seed: int = 0,
    *,
    progress: ProgressCallback | None = None,
) -> list[CheckResult]:
    """Every conformance check on one backend, as rows.

    Cases of a dtype that the backend cannot hold as configured
    (:meth:`Harness.unsupported`: float64 and complex128 under JAX without
    64-bit mode) are not run; the error-behaviour checks then run in single
    precision. ``progress(done, total, what)`` is called before each check.
    """
    h = Harness(backend, device)
    unsupported = h.unsupported()
    tasks: list[tuple[str, str, str, Callable[..., Any], tuple[Any, ...]]] = []
    for op in RULES:
        for dtype in C.DTYPES:
            if dtype in unsupported:
                continue
            for shape in C.SHAPES[op]:
                rng = np.random.default_rng([seed, zlib.crc32(f"{op} {shape.id} {dtype}".encode())])
                case = f"{shape.id} {dtype}"
                args: tuple[Any, ...] = (h, op, shape, dtype, rng)
                tasks.append((op, "forward", case, check_forward, args))
                tasks.append((op, "jvp-fd", case, check_jvp, args))
                tasks.append((op, "vjp-adjoint", case, check_vjp, args))
                if dtype in ("float64", "complex128"):
                    tasks.append((op, "native-ad", case, check_native, args))
        tasks.append((op, "errors", "all", check_errors, (h.narrowed(), op)))
    for oracle in load_cases():
        for r in replays(oracle):
            if any(x.dtype.name in unsupported for x in r.primals):
                continue
            replay = (h, oracle.case_id, r, *oracle.first_order)
            tasks.append((r.op, "oracle", oracle.case_id, check_oracle, replay))
    rows: list[CheckResult] = []
    for done, (op, name, case, check, args) in enumerate(tasks):
        if progress is not None:
            progress(done, len(tasks), f"{op} {name} {case}")
        rows += _guarded(op, name, case, check, *args)
    if progress is not None:
        progress(len(tasks), len(tasks), "")
    return rows


def _guarded(
    op: str, name: str, case: str, check: Callable[..., Any], *args: Any
) -> list[CheckResult]:
    """The rows of one check, or one failing row saying how it crashed."""
    try:
        out = check(*args)
        return [out] if isinstance(out, CheckResult) else list(out)
    except Exception as exc:
        return [CheckResult(op, name, case, math.inf, 0.0, f"crashed: {type(exc).__name__}: {exc}")]
