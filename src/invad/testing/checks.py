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

    def put(self, x: np.ndarray) -> Any:
        if self._narrow:
            to = self._narrow.get(x.dtype.name)
            if to is not None:
                x = x.astype(to)
        return self.backend.from_numpy(x, self.device)

    def get(self, x: Any) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(x))

    def call(self, op: str, primals: tuple[np.ndarray, ...], params: dict[str, Any]) -> Any:
        """``op`` of ``primals``: on the backend, or, for a dtype it cannot hold, on NumPy's
        (the finite-difference references at double precision)."""
        unsupported = self.unsupported()
        if unsupported and any(x.dtype.name in unsupported for x in primals):
            return _numpy_reference().call(op, primals, params)
        out = getattr(self.ops, op)(*(self.put(x) for x in primals), **params)
        return out[0] if RULES[op].returns_info else out

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


def _value(op: str, out: Any) -> Any:
    return out[0] if RULES[op].returns_info else out


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


# -- the checks -------------------------------------------------------------------


def check_forward(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> CheckResult:
    primals = C.primals(op, shape, dtype, rng)
    out = getattr(h.ops, op)(*(h.put(x) for x in primals), **shape.params)
    value = _value(op, out)
    got = h.get(value)
    error = reconstruction_error(op, primals, got, shape.params)
    problems = []
    if str(got.dtype) != dtype:
        problems.append(f"dtype {got.dtype}, expected {dtype}")
    if h.backend.device_of(value) != h.backend.device_of(h.put(primals[0])):
        problems.append("result on another device than its input")
    if RULES[op].returns_info:
        info = h.get(out[1])
        batch = primals[0].shape[:-2] if op in ("inv_ex", "solve_ex") else ()
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
    primals = C.primals(op, shape, dtype, rng)
    tangents = tuple(C.random_array(rng, x.shape, dtype) for x in primals)
    _, tangent_out = h.ops.jvp(
        op, tuple(h.put(x) for x in primals), tuple(h.put(t) for t in tangents), **shape.params
    )
    got = h.get(_value(op, tangent_out))
    wide = WIDE[dtype]
    p, t = (tuple(x.astype(wide) for x in xs) for xs in (primals, tangents))
    plus = h.get(h.call(op, tuple(x + FD_STEP * v for x, v in zip(p, t)), shape.params))
    minus = h.get(h.call(op, tuple(x - FD_STEP * v for x, v in zip(p, t)), shape.params))
    fd = (plus - minus) / (2 * FD_STEP)
    error = _relative(got.astype(wide), fd)
    detail = "" if str(got.dtype) == dtype else f"tangent dtype {got.dtype}, expected {dtype}"
    return CheckResult(
        op, "jvp-fd", f"{shape.id} {dtype}", math.inf if detail else error, FD_RTOL[dtype], detail
    )


def check_vjp(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> CheckResult:
    """The dot-product test <ybar, J v> = <J* ybar, v> under Re tr(X^H Y)."""
    primals = C.primals(op, shape, dtype, rng)
    tangents = tuple(C.random_array(rng, x.shape, dtype) for x in primals)
    put_primals = tuple(h.put(x) for x in primals)
    out, tangent_out = h.ops.jvp(op, put_primals, tuple(h.put(t) for t in tangents), **shape.params)
    value = h.get(_value(op, out))
    ybar = C.random_array(rng, value.shape, dtype)
    ct = (h.put(ybar), None) if RULES[op].returns_info else h.put(ybar)
    _, xbars = h.ops.vjp(op, put_primals, ct, **shape.params)
    xbars = tuple(h.get(x) for x in xbars)
    jv = h.get(_value(op, tangent_out))
    lhs = _inner(ybar, jv)
    rhs = sum(_inner(xb, v) for xb, v in zip(xbars, tangents))
    scale = np.linalg.norm(ybar) * np.linalg.norm(jv) + sum(
        np.linalg.norm(xb) * np.linalg.norm(v) for xb, v in zip(xbars, tangents)
    )
    error = abs(lhs - rhs) / scale if scale else abs(lhs - rhs)
    bad = [
        f"cotangent of input {i}: {xb.dtype}{xb.shape}, expected {x.dtype}{x.shape}"
        for i, (xb, x) in enumerate(zip(xbars, primals))
        if xb.dtype != x.dtype or xb.shape != x.shape
    ]
    return CheckResult(
        op,
        "vjp-adjoint",
        f"{shape.id} {dtype}",
        math.inf if bad else error,
        100 * EPS[dtype],
        "; ".join(bad),
    )


def check_native(
    h: Harness, op: str, shape: C.Shape, dtype: str, rng: np.random.Generator
) -> Iterator[CheckResult]:
    """The framework's own JVP and VJP of the installed op equal the rules' ``ops.jvp/vjp``."""
    if not h.backend.native_ad:
        return
    primals = C.primals(op, shape, dtype, rng)
    tangents = tuple(C.random_array(rng, x.shape, dtype) for x in primals)
    put_primals = tuple(h.put(x) for x in primals)
    put_tangents = tuple(h.put(t) for t in tangents)
    installed = getattr(h.ops, op)

    def value(*xs: Any) -> Any:
        return _value(op, installed(*xs, **shape.params))

    out, rule_jvp = h.ops.jvp(op, put_primals, put_tangents, **shape.params)
    ybar = C.random_array(rng, h.get(_value(op, out)).shape, dtype)
    ct = (h.put(ybar), None) if RULES[op].returns_info else h.put(ybar)
    _, rule_vjp = h.ops.vjp(op, put_primals, ct, **shape.params)
    native_jvp = h.backend.native_jvp(value, put_primals, put_tangents)
    native_vjp = h.backend.native_vjp(value, put_primals, h.put(ybar))
    case = f"{shape.id} {dtype}"
    tol = 1000 * EPS[dtype]
    if native_jvp is not None:
        error = _relative(h.get(native_jvp), h.get(_value(op, rule_jvp)))
        yield CheckResult(op, "native-ad", f"{case} jvp", error, tol)
    if native_vjp is not None:
        error = max(_relative(h.get(n), h.get(r)) for n, r in zip(native_vjp, rule_vjp))
        yield CheckResult(op, "native-ad", f"{case} vjp", error, tol)


def check_oracle(
    h: Harness, case_id: str, r: Replay, rtol: float, atol: float
) -> Iterator[CheckResult]:
    """JVP and VJP against the oracle's PyTorch reference, within the case's tolerances."""
    primals = tuple(h.put(x) for x in r.primals)
    _, tangent_out = h.ops.jvp(r.op, primals, tuple(h.put(t) for t in r.tangents), **r.params)
    ct = (h.put(r.cotangent), None) if RULES[r.op].returns_info else h.put(r.cotangent)
    _, xbars = h.ops.vjp(r.op, primals, ct, **r.params)
    pairs = {"oracle-jvp": [(h.get(_value(r.op, tangent_out)), r.jvp)]}
    pairs["oracle-vjp"] = [(h.get(x), ref) for x, ref in zip(xbars, r.vjp)]
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


def check_errors(h: Harness, op: str) -> Iterator[CheckResult]:
    rng = np.random.default_rng(7)
    fn = getattr(h.ops, op)
    shape = next(s for s in C.SHAPES[op] if s.family in ("batched", "3d"))
    good = C.primals(op, shape, "float64", rng)
    params = shape.params
    ex = RULES[op].returns_info

    def call(*xs: np.ndarray, **kw: Any) -> Callable[[], Any]:
        return lambda: fn(*(h.put(x) for x in xs), **{**params, **kw})

    integer = tuple(np.ones(x.shape, dtype=np.int64) for x in good)
    yield _expect(op, "integer dtype", call(*integer), TypeError, (op, "dtype"))
    if op in ("inv", "inv_ex", "solve", "solve_ex"):
        yield _expect(
            op, "non-square a", call(np.ones((4, 3, 4)), *good[1:]), ValueError, (op, "square")
        )
        singular = good[0].copy()
        singular[1] = 0.0  # batch element 1 singular, at U[0, 0]
        zeros = (singular, *good[1:])
        if ex:

            def info_of() -> None:
                info = h.get(fn(*(h.put(x) for x in zeros), **params)[1])
                if not (info[1] > 0 and not info[0] and not info[2:].any()):
                    raise AssertionError(f"info {info}")

            yield _expect(op, "singular gives info", info_of, None)
        elif h.backend.raises_on_singular:
            yield _expect(op, "singular raises", call(*zeros), h.backend.linalg_error, (op, "(1,)"))
        nan = good[0].copy()
        nan[0, 0, 0] = np.nan

        def propagates() -> None:
            out = h.get(_value(op, fn(*(h.put(x) for x in (nan, *good[1:])), **params)))
            if not np.isnan(out[0]).any() or np.isnan(out[1:]).any():
                raise AssertionError("NaN did not stay in its batch element")

        yield _expect(op, "NaN propagates", propagates, None)
    if op in ("solve", "solve_ex"):
        yield _expect(
            op,
            "b does not fit",
            call(good[0], np.ones((4, 5, 2))),
            ValueError,
            (op, "does not fit"),
        )
        yield _expect(
            op,
            "batches do not broadcast",
            call(good[0], np.ones((3, 3, 2))),
            ValueError,
            (op, "broadcast"),
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
