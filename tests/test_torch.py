"""The PyTorch backend: autograd.Functions built from the rules, under every torch AD mechanism.

The conformance kit (`pytest --pyargs invad.testing --invad-backend torch`)
checks the rules through ``ops.jvp``/``ops.vjp``; this file checks what only
torch has: ``gradcheck``/``gradgradcheck`` (forward mode included), agreement
with ``torch.linalg``'s values and gradients, the oracle's second order
through double backward, ``torch.func`` transforms and ``vmap``, LU reuse,
devices, and errors.
"""

from __future__ import annotations

import math
import re
import sys
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.autograd import gradcheck, gradgradcheck  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import invad  # noqa: E402
from invad.testing import cases as C  # noqa: E402
from invad.testing.oracle import load_cases, replays  # noqa: E402

DTYPES = ("float64", "complex128")


@pytest.fixture(scope="module")
def ops():
    return invad.install("torch")


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def well_conditioned(rng, batch, n, dtype):
    return torch.from_numpy(C.well_conditioned(rng, batch, n, dtype))


def random(rng, shape, dtype):
    return torch.from_numpy(C.random_array(rng, shape, dtype))


# -- the cases: an op, its inputs, its parameters, and torch's own version of it -------------------


def _native_tensorsolve(a, b, axes=None):
    if axes:
        a = torch.movedim(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    return torch.linalg.tensorsolve(a, b)


def _native_solve(a, b, left=True):
    if b.ndim == 1 and not left:  # torch has no vector b for x a = b: one row
        return torch.linalg.solve(a, b[None, :], left=False)[..., 0, :]
    return torch.linalg.solve(a, b, left=left)


NATIVE = {
    "inv": torch.linalg.inv,
    "inv_ex": lambda a: torch.linalg.inv_ex(a)[0],
    "solve": _native_solve,
    "solve_ex": _native_solve,
    "tensorinv": torch.linalg.tensorinv,
    "tensorsolve": _native_tensorsolve,
}

#: (op, id, input shapes, params). b of ndim > 1 is (..., n, k) or (..., k, n): torch agrees.
CASES = [
    ("inv", "single", [(3, 3)], {}),
    ("inv", "batched", [(2, 3, 3)], {}),
    ("inv_ex", "batched", [(2, 3, 3)], {}),
    ("solve", "single", [(3, 3), (3, 2)], {}),
    ("solve", "vector", [(3, 3), (3,)], {}),
    ("solve", "batched", [(2, 3, 3), (2, 3, 2)], {}),
    ("solve", "batched-a-vector-b", [(2, 3, 3), (3,)], {}),
    ("solve", "broadcast", [(2, 1, 3, 3), (4, 3, 2)], {}),
    ("solve", "right", [(3, 3), (2, 3)], {"left": False}),
    ("solve", "right-batched", [(2, 3, 3), (2, 2, 3)], {"left": False}),
    ("solve", "right-vector", [(3, 3), (3,)], {"left": False}),
    ("solve", "right-broadcast", [(3, 3), (2, 4, 3)], {"left": False}),
    ("solve_ex", "batched", [(2, 3, 3), (2, 3, 2)], {}),
    ("solve_ex", "right", [(2, 3, 3), (2, 1, 3)], {"left": False}),
    ("tensorinv", "matrix", [(4, 4)], {"ind": 1}),
    ("tensorinv", "3d", [(2, 3, 6)], {"ind": 2}),
    ("tensorsolve", "3d", [(2, 3, 6), (2, 3)], {}),
    ("tensorsolve", "axes", [(6, 2, 3), (2, 3)], {"axes": (0,)}),
]


def case_inputs(op, shapes, params, dtype, requires_grad=True):
    """Well-conditioned inputs for a case, as torch tensors."""
    rng = rng_for(op, shapes, params, dtype)
    shape = C.Shape("t", tuple(shapes), params)
    base = "solve" if op.startswith("solve") else "inv" if op.startswith("inv") else op
    xs = [torch.from_numpy(x) for x in C.primals(base, shape, dtype, rng)]
    return [x.requires_grad_(requires_grad) for x in xs]


def value_fn(ops, op, params):
    """The op as a function of its inputs returning its differentiable value."""
    fn = getattr(ops, op)
    if op.endswith("_ex"):
        return lambda *xs: fn(*xs, **params)[0]
    return lambda *xs: fn(*xs, **params)


def params_of(case):
    return case[3]


@pytest.fixture(params=CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def case(request):
    return request.param


# -- gradcheck and gradgradcheck, forward mode included --------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcheck_with_forward_mode(ops, case, dtype):
    op, _, shapes, params = case
    xs = case_inputs(op, shapes, params, dtype)
    assert gradcheck(
        value_fn(ops, op, params),
        tuple(xs),
        check_forward_ad=True,
        check_backward_ad=True,
        check_batched_grad=True,
        check_batched_forward_grad=True,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradgradcheck_with_forward_over_reverse(ops, case, dtype):
    op, _, shapes, params = case
    xs = case_inputs(op, shapes, params, dtype)
    assert gradgradcheck(
        value_fn(ops, op, params), tuple(xs), check_fwd_over_rev=True, check_batched_grad=True
    )


# -- values and gradients against torch.linalg -----------------------------------------------------


def rel_err(got, ref):
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1.0)
    return (got - ref).abs().max().item() / scale if ref.numel() else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_and_gradients_match_torch_linalg(ops, case, dtype):
    op, _, shapes, params = case
    xs = case_inputs(op, shapes, params, dtype)
    mine = value_fn(ops, op, params)(*xs)
    theirs = NATIVE[op](*xs, **params)
    assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
    assert rel_err(mine, theirs) < 1e-12
    # A real loss of the result, its gradient in PyTorch's convention for both.
    w = random(rng_for("w", op, dtype), tuple(mine.shape), dtype)
    g_mine = torch.autograd.grad((w * mine).real.sum() + mine.abs().pow(2).sum(), xs)
    g_theirs = torch.autograd.grad((w * theirs).real.sum() + theirs.abs().pow(2).sum(), xs)
    for gm, gt, x in zip(g_mine, g_theirs, xs):
        assert gm.dtype == x.dtype  # real inputs get real gradients
        assert rel_err(gm, gt) < 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_matches_torch_linalg(ops, dtype):
    """Hessian-vector products through double backward, against torch.linalg's."""
    for op, shapes, params in (
        ("inv", [(2, 3, 3)], {}),
        ("solve", [(2, 3, 3), (2, 3, 2)], {}),
        ("solve", [(3, 3), (2, 3)], {"left": False}),
    ):
        xs = case_inputs(op, shapes, params, dtype)
        vs = [random(rng_for("v", op, k), tuple(x.shape), dtype) for k, x in enumerate(xs)]

        def hvp(f, xs=xs, vs=vs):
            y = f(*xs)
            loss = (y.abs() ** 2).sum() + y.real.sum()
            g = torch.autograd.grad(loss, xs, create_graph=True)
            return torch.autograd.grad(g, xs, grad_outputs=vs)

        native = NATIVE[op]
        mine = hvp(value_fn(ops, op, params))
        theirs = hvp(lambda *z, native=native, params=params: native(*z, **params))
        for got, ref in zip(mine, theirs):
            assert rel_err(got, ref) < 1e-9


def test_real_inputs_get_real_gradients_and_complex_follow_torch(ops):
    rng = rng_for("mixed")
    a = well_conditioned(rng, (2,), 3, "float64").requires_grad_()
    b = random(rng, (2, 3, 2), "complex128").requires_grad_()
    x = ops.solve(a, b)
    assert x.dtype == torch.complex128
    ga, gb = torch.autograd.grad(x.abs().pow(2).sum(), (a, b))
    assert ga.dtype == torch.float64 and gb.dtype == torch.complex128
    ra, rb = torch.autograd.grad(torch.linalg.solve(a.to(b.dtype), b).abs().pow(2).sum(), (a, b))
    assert rel_err(ga, ra) < 1e-10 and rel_err(gb, rb) < 1e-10


# -- the oracle, with its second order through double backward -------------------------------------

ORACLE = [
    pytest.param(case, replay, id=f"{case.case_id}-{replay.op}")
    for case in load_cases()
    for replay in replays(case)
]


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize(("case", "replay"), ORACLE)
def test_oracle_replay_with_hvp_through_double_backward(ops, case, replay):
    """JVP (forward mode), VJP (backward) and HVP (double backward) of the installed op against
    the oracle; integer inputs (lu_solve's pivots, in torch's 1-based convention) and the outputs
    without a cotangent (lu_factor's pivots) take no part."""
    rtol, atol = case.first_order
    primals = [torch.from_numpy(np.array(x)) for x in replay.primals_for(1)]
    floats = [i for i, x in enumerate(primals) if x.is_floating_point() or x.is_complex()]
    xs = [primals[i].requires_grad_() for i in floats]
    cts = _as_tuple(replay.cotangent)
    used = [k for k, ct in enumerate(cts) if ct is not None]  # the differentiable outputs
    op = getattr(ops, replay.op)

    def f(*z):
        args = list(primals)
        for i, x in zip(floats, z):
            args[i] = x
        out = _as_tuple(op(*args, **replay.params))
        return tuple(out[k] for k in used)

    ys = f(*xs)
    cts = [torch.from_numpy(np.array(cts[k])) for k in used]
    tangents = tuple(torch.from_numpy(np.array(replay.tangents[i])) for i in floats)
    # JVP by forward mode, VJP by backward.
    _, jv = torch.func.jvp(f, tuple(x.detach() for x in xs), tangents)
    for got, k in zip(jv, used):
        np.testing.assert_allclose(got.numpy(), _as_tuple(replay.jvp)[k], rtol=rtol, atol=atol)
    vjp = torch.autograd.grad(ys, xs, cts, retain_graph=True)
    for got, i in zip(vjp, floats):
        np.testing.assert_allclose(got.numpy(), replay.vjp[i], rtol=rtol, atol=atol)
    if replay.hvp is None:
        return
    rtol, atol = case.second_order
    phi = sum((ct.conj() * y).real.sum() for ct, y in zip(cts, ys))  # <ct, op(x)>
    grads = torch.autograd.grad(phi, xs, create_graph=True)
    hvp = torch.autograd.grad(grads, xs, grad_outputs=tangents)
    for got, i in zip(hvp, floats):
        np.testing.assert_allclose(got.numpy(), replay.hvp[i], rtol=rtol, atol=atol)


def test_oracle_covers_the_lu_family():
    covered = {replay.op for _, replay in (p.values for p in ORACLE)}
    assert {"lu_factor", "lu_factor_ex", "lu_solve", "det", "slogdet"} <= covered


# -- torch.func: transforms and vmap ---------------------------------------------------------------


def _flat(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [t for item in tree for t in _flat(item)]


def _same(got, ref, tol=1e-9):
    got, ref = _flat(got), _flat(ref)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert rel_err(g, r) < tol


TRANSFORMS = {
    "grad": lambda f: torch.func.grad(f, argnums=(0, 1)),
    "jacrev": lambda f: torch.func.jacrev(f, argnums=(0, 1)),
    "jacfwd": lambda f: torch.func.jacfwd(f, argnums=(0, 1)),
    "hessian": lambda f: torch.func.hessian(f, argnums=(0, 1)),
    "jacrev-jacrev": lambda f: torch.func.jacrev(
        torch.func.jacrev(f, argnums=(0, 1)), argnums=(0, 1)
    ),
    "jacfwd-jacfwd": lambda f: torch.func.jacfwd(
        torch.func.jacfwd(f, argnums=(0, 1)), argnums=(0, 1)
    ),
    "jacrev-jacfwd": lambda f: torch.func.jacrev(
        torch.func.jacfwd(f, argnums=(0, 1)), argnums=(0, 1)
    ),
    "vmap-grad": lambda f: torch.func.vmap(torch.func.grad(f, argnums=(0, 1))),
    "vmap-hessian": lambda f: torch.func.vmap(torch.func.hessian(f, argnums=(0, 1))),
    "grad-of-vmap": lambda f: torch.func.grad(
        lambda a, b: torch.func.vmap(f)(a, b).sum(), argnums=(0, 1)
    ),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("op", ["solve", "inv", "tensorsolve"])
def test_torch_func_transforms_match_a_reference(ops, name, op):
    """Every transform and nesting on a real loss of the op, against the same on plain torch ops.

    The reference is torch.linalg where torch gets it right; for forward-over-forward
    and vmap of second order, where torch.linalg.solve's own rules are wrong (torch
    2.13), it is the explicit formula x = inv(a) @ b in matmuls, which every transform
    differentiates exactly.
    """
    rng = rng_for("func", op)
    batched = name.startswith("vmap") or name == "grad-of-vmap"
    lead = (3,) if batched else ()
    if op == "tensorsolve":
        a = torch.stack(
            [well_conditioned(rng, (), 6, "float64").reshape(2, 3, 6) for _ in range(3)]
        )
        a = a if batched else a[0]
        b = random(rng, (*lead, 2, 3), "float64")
        mine = lambda a, b: ops.tensorsolve(a, b)  # noqa: E731
        ref = lambda a, b: (torch.linalg.inv(a.reshape(6, 6)) @ b.reshape(6)).reshape(6)  # noqa: E731
    else:
        a = well_conditioned(rng, lead, 3, "float64")
        b = random(rng, (*lead, 3, 2), "float64")
        if op == "solve":
            mine = lambda a, b: ops.solve(a, b)  # noqa: E731
            ref = lambda a, b: torch.linalg.inv(a) @ b  # noqa: E731
        else:
            mine = lambda a, b: ops.inv(a) @ b  # noqa: E731
            ref = lambda a, b: torch.linalg.inv(a) @ b  # noqa: E731

    def loss(f):
        return lambda a, b: torch.sin(f(a, b)).sum()

    _same(TRANSFORMS[name](loss(mine))(a, b), TRANSFORMS[name](loss(ref))(a, b))


@pytest.mark.parametrize("op", ["inv", "inv_ex", "solve", "solve_ex", "tensorinv", "tensorsolve"])
def test_vmap_matches_a_python_loop(ops, op):
    rng = rng_for("vmap", op)
    fn = getattr(ops, op)
    if op.startswith("inv"):
        xs, params = (well_conditioned(rng, (4,), 3, "float64"),), {}
    elif op.startswith("solve"):
        xs, params = (well_conditioned(rng, (4,), 3, "float64"), random(rng, (4, 3), "float64")), {}
    elif op == "tensorinv":
        xs = (
            torch.stack(
                [well_conditioned(rng, (), 6, "float64").reshape(2, 3, 6) for _ in range(4)]
            ),
        )
        params = {"ind": 2}
    else:
        a = torch.stack(
            [well_conditioned(rng, (), 6, "float64").reshape(2, 3, 6) for _ in range(4)]
        )
        xs, params = (a, random(rng, (4, 2, 3), "float64")), {}
    batched = torch.func.vmap(lambda *z: fn(*z, **params))(*xs)
    looped = [fn(*(x[i] for x in xs), **params) for i in range(4)]
    if op.endswith("_ex"):
        assert batched[1].shape == (4,) and not batched[1].any()
        batched, looped = batched[0], [v for v, _ in looped]
    _same(batched, torch.stack(looped), 1e-13)


def test_vmap_with_in_dims_and_broadcast_per_example(ops):
    rng = rng_for("in_dims")
    a = well_conditioned(rng, (), 3, "float64")
    b = random(rng, (3, 5, 2), "float64")  # vmapped over dim 1
    out = torch.func.vmap(ops.solve, in_dims=(None, 1))(a, b)
    _same(out, torch.stack([torch.linalg.solve(a, b[:, i]) for i in range(5)]), 1e-13)
    # per-example broadcasting: a (3, 3) against b (4, 3, 2) in each of 5 examples
    a5 = well_conditioned(rng, (5,), 3, "float64")
    b5 = random(rng, (5, 4, 3, 2), "float64")
    out = torch.func.vmap(ops.solve)(a5, b5)
    _same(out, torch.linalg.solve(a5[:, None], b5), 1e-12)
    grads = torch.func.vmap(torch.func.grad(lambda a, b: ops.solve(a, b).sum(), argnums=(0, 1)))(
        a5, b5
    )
    refs = torch.func.vmap(
        torch.func.grad(lambda a, b: (torch.linalg.inv(a) @ b).sum(), argnums=(0, 1))
    )(a5, b5)
    _same(grads, refs)


def test_forward_mode_dual_tensors(ops):
    import torch.autograd.forward_ad as fwAD

    rng = rng_for("dual")
    a = well_conditioned(rng, (2,), 3, "complex128")
    b = random(rng, (2, 3, 2), "complex128")
    da, db = random(rng, (2, 3, 3), "complex128"), random(rng, (2, 3, 2), "complex128")
    with fwAD.dual_level():
        x = ops.solve(fwAD.make_dual(a, da), fwAD.make_dual(b, db))
        y = torch.linalg.solve(fwAD.make_dual(a, da), fwAD.make_dual(b, db))
        _same(fwAD.unpack_dual(x).tangent, fwAD.unpack_dual(y).tangent)
        inv = ops.inv(fwAD.make_dual(a, da))
        _same(
            fwAD.unpack_dual(inv).tangent,
            fwAD.unpack_dual(torch.linalg.inv(fwAD.make_dual(a, da))).tangent,
        )


def test_triple_forward_mode_nesting_is_refused_not_wrong(ops):
    rng = rng_for("fff")
    a = well_conditioned(rng, (), 2, "float64")
    b = random(rng, (2, 1), "float64")
    f = torch.func.jacfwd(torch.func.jacfwd(torch.func.jacfwd(lambda a: ops.solve(a, b).sum())))
    with pytest.raises(NotImplementedError, match="jacrev"):
        f(a)


# -- the factorization is reused -------------------------------------------------------------------


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_solve_backward_reuses_the_forward_lu_at_every_order(ops):
    rng = rng_for("reuse")
    a = well_conditioned(rng, (2,), 4, "float64").requires_grad_()
    b = random(rng, (2, 4, 3), "float64").requires_grad_()
    x = ops.solve(a, b)
    with OpCounter() as first:
        ga, gb = torch.autograd.grad(x.pow(2).sum(), (a, b), create_graph=True)
    factorizations = {
        "linalg_lu_factor_ex",
        "linalg_lu_factor",
        "linalg_solve_ex",
        "_linalg_solve_ex",
        "linalg_inv_ex",
        "linalg_inv",
    }
    assert not factorizations & set(first.ops), first.ops
    assert first.ops.count("linalg_lu_solve") == 1
    with OpCounter() as second:
        torch.autograd.grad(ga.sum() + gb.sum(), (a, b))
    assert not factorizations & set(second.ops), second.ops
    assert "linalg_lu_solve" in second.ops


def test_first_order_backward_builds_no_graph(ops):
    rng = rng_for("plain")
    a = well_conditioned(rng, (), 3, "float64").requires_grad_()
    b = random(rng, (3, 1), "float64").requires_grad_()
    ga, gb = torch.autograd.grad(ops.solve(a, b).sum(), (a, b))
    assert not ga.requires_grad and not gb.requires_grad


# -- singular input, info --------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["inv", "solve"])
def test_singular_input_raises_linalg_error_naming_op_shape_and_index(ops, op):
    rng = rng_for("singular", op)
    a = well_conditioned(rng, (3,), 3, "float64")
    a[1] = 0.0
    args = (a,) if op == "inv" else (a, random(rng, (3, 3, 2), "float64"))
    with pytest.raises(torch.linalg.LinAlgError) as info:
        getattr(ops, op)(*args)
    message = str(info.value)
    assert f"invad.{op}" in message and "(3, 3, 3)" in message and "(1,)" in message


def test_singular_tensor_ops_raise(ops):
    with pytest.raises(torch.linalg.LinAlgError, match=r"invad\.tensorinv.*\(4, 4\)"):
        ops.tensorinv(torch.zeros(4, 4, dtype=torch.float64), ind=1)
    with pytest.raises(torch.linalg.LinAlgError, match=r"invad\.tensorsolve"):
        ops.tensorsolve(
            torch.zeros(2, 3, 6, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
        )


@pytest.mark.parametrize("op", ["inv_ex", "solve_ex"])
def test_ex_ops_return_info_without_raising_and_info_has_no_gradient(ops, op):
    rng = rng_for("ex", op)
    a = well_conditioned(rng, (3,), 3, "float64")
    a[1, :, 0] = 0.0  # batch element 1: U[0, 0] == 0
    a.requires_grad_()
    args = (a,) if op == "inv_ex" else (a, random(rng, (3, 3, 2), "float64").requires_grad_())
    value, info = getattr(ops, op)(*args)
    assert info.dtype == torch.int32 and info.shape == (3,)
    assert info.tolist() == [0, 1, 0]
    assert not info.requires_grad and info.grad_fn is None
    assert value.requires_grad
    g = torch.autograd.grad(value[0].sum(), args)  # the factored elements still differentiate
    assert torch.isfinite(g[0][0]).all()


def test_singular_under_vmap_gives_non_finite_values_instead_of_raising(ops):
    a = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    a[1] = 0.0
    out = torch.func.vmap(ops.inv)(a)
    assert torch.isfinite(out[0]).all() and not torch.isfinite(out[1]).all()


# -- devices ---------------------------------------------------------------------------------------


def test_devices_and_install_on_a_device(ops):
    backend = ops.backend
    assert "cpu" in backend.devices()
    assert ops.device == torch.device("cpu")
    meta = invad.install("torch", device="meta")
    assert meta.device == torch.device("meta") and meta is invad.install("torch", device="meta")
    assert backend.from_numpy(np.eye(2), meta.device).device.type == "meta"
    with pytest.raises(ValueError, match=r"torch.*cannot use device"):
        invad.install("torch", device="no-such-device")


def test_outputs_stay_on_the_input_device(ops):
    a = torch.empty(2, 3, 3, dtype=torch.float64, device="meta")
    b = torch.empty(2, 3, 1, dtype=torch.float64, device="meta")
    for out in (ops.solve(a, b), ops.inv(a), *ops.solve_ex(a, b), *ops.inv_ex(a)):
        assert out.device.type == "meta"
    _, tangent = ops.jvp("solve", (a, b), (a, b))
    assert tangent.device.type == "meta"


@pytest.mark.parametrize("op", ["solve", "solve_ex", "tensorsolve"])
def test_inputs_on_different_devices_raise_naming_both(ops, op):
    a = (
        torch.eye(6, dtype=torch.float64).reshape(6, 6)
        if op != "tensorsolve"
        else torch.eye(6, dtype=torch.float64).reshape(2, 3, 6)
    )
    b = torch.ones((6, 1) if op != "tensorsolve" else (2, 3), dtype=torch.float64, device="meta")
    a.requires_grad_()
    with pytest.raises(
        ValueError, match=f"invad.{op}: `a` is on device cpu but `b` is on device meta"
    ):
        getattr(ops, op)(a, b)


# -- ops.jvp / ops.vjp on torch tensors ------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_jvp_and_vjp_on_torch_tensors(ops, dtype):
    rng = rng_for("functional", dtype)
    a = well_conditioned(rng, (2,), 3, dtype)
    b = random(rng, (2, 3, 2), dtype)
    da, db = random(rng, (2, 3, 3), dtype), random(rng, (2, 3, 2), dtype)
    x, dx = ops.jvp("solve", (a, b), (da, db))
    ref_x, ref_dx = torch.func.jvp(torch.linalg.solve, (a, b), (da, db))
    _same((x, dx), (ref_x, ref_dx), 1e-12)
    xbar = random(rng, (2, 3, 2), dtype)
    _, cts = ops.vjp("solve", (a, b), xbar)
    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
    _same(cts, torch.autograd.grad(torch.linalg.solve(a_, b_), (a_, b_), xbar), 1e-12)
    (_, info), (dvalue, none) = ops.jvp("inv_ex", (a,), (da,))
    assert none is None and info.shape == (2,)
    _same(dvalue, torch.func.jvp(torch.linalg.inv, (a,), (da,))[1], 1e-12)


# -- calling conventions, dtypes, registration -----------------------------------------------------


def test_keyword_inputs_and_parameters(ops):
    rng = rng_for("kw")
    a = well_conditioned(rng, (), 3, "float64")
    b = random(rng, (2, 3), "float64")
    ref = torch.linalg.solve(a, b, left=False)
    _same(ops.solve(a, b, left=False), ref, 1e-13)
    _same(ops.solve(a=a, b=b, left=False), ref, 1e-13)
    _same(ops.solve(a, b=b, left=False), ref, 1e-13)
    with pytest.raises(TypeError):
        ops.solve(a, b, True)
    with pytest.raises(TypeError, match=r"invad\.solve.*left"):
        ops.solve(a, b, left=1)


def test_vector_b_is_a_vector_only_when_one_dimensional(ops):
    rng = rng_for("vector")
    a = well_conditioned(rng, (4,), 3, "float64")
    b = random(rng, (4, 3), "float64")  # torch.linalg.solve reads this as a batch of vectors
    with pytest.raises(ValueError, match=r"b\[\.\.\., None\]"):
        ops.solve(a, b)
    _same(ops.solve(a, b[..., None])[..., 0], torch.linalg.solve(a, b), 1e-13)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_single_precision_keeps_its_dtype(ops, dtype):
    rng = rng_for("single", dtype)
    a = well_conditioned(rng, (2,), 3, dtype).requires_grad_()
    b = random(rng, (2, 3, 1), dtype).requires_grad_()
    x = ops.solve(a, b)
    assert x.dtype == getattr(torch, dtype)
    ga, gb = torch.autograd.grad(x.abs().sum(), (a, b))
    assert ga.dtype == a.dtype and gb.dtype == b.dtype
    assert ops.inv_ex(a)[1].dtype == torch.int32


def test_integer_input_raises_type_error_naming_the_op(ops):
    with pytest.raises(TypeError, match=r"invad\.inv"):
        ops.inv(torch.ones(2, 2, dtype=torch.int64))


def test_backend_is_listed_and_top_level_dispatch_finds_it():
    info = {b.name: b for b in invad.backends()}["torch"]
    assert info.available and info.native_ad and info.version == torch.__version__
    a = torch.eye(2, dtype=torch.float64) * 2
    assert torch.equal(invad.inv(a), torch.eye(2, dtype=torch.float64) / 2)
    assert invad.install("torch") is invad.install("torch")


def test_missing_torch_is_reported_with_how_to_install(monkeypatch):
    from importlib import import_module

    module = import_module("invad.backends.torch")
    assert not module.TorchBackend().owns(np.ones(2))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ImportError, match=r"pip install 'invad\[torch\]'"):
        module.TorchBackend().load()


def test_empty_shapes_and_their_gradients(ops):
    a = torch.empty(0, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.empty(0, 3, 2, dtype=torch.float64, requires_grad=True)
    x = ops.solve(a, b)
    assert x.shape == (0, 3, 2)
    ga, gb = torch.autograd.grad(x.sum(), (a, b))
    assert ga.shape == a.shape and gb.shape == b.shape
    z = torch.empty(2, 0, 0, dtype=torch.float64, requires_grad=True)
    assert ops.inv(z).shape == (2, 0, 0)
    assert torch.autograd.grad(ops.inv(z).sum(), z)[0].shape == z.shape


def test_nan_stays_in_its_batch_element(ops):
    a = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1) * 2
    a[0, 0, 0] = math.nan
    out = ops.inv(a)
    assert torch.isnan(out[0]).any() and not torch.isnan(out[1]).any()


# -- what the graph keeps: the least the derivatives need -----------------------------------


def _saved_bytes(f, *args, **params):
    """Bytes of the distinct storages that autograd saves for the backward of ``f``."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(*args, **params)
    return sum(storages.values())


SAVED_CASES = [
    # op, shape of a, shape of b, parameters
    ("solve", (3, 3), (3,), {}),
    ("solve", (3, 3), (3, 2), {}),
    ("solve", (4, 3, 3), (4, 3, 2), {}),
    ("solve", (4, 3, 3), (4, 2, 3), {"left": False}),
    ("solve", (3, 3), (4, 3, 2), {}),
    ("solve", (2, 16, 16), (16, 5), {}),
    ("solve_ex", (4, 3, 3), (4, 3, 2), {}),
    ("inv", (4, 3, 3), None, {}),
    ("inv_ex", (4, 3, 3), None, {}),
    ("tensorinv", (2, 3, 2, 3), None, {}),
    ("tensorsolve", (2, 3, 6), (2, 3), {}),
]


def _identity_like(a_shape, dtype="float64", scale=4.0):
    """``scale`` times the identity of the (square or tensor) matrix of shape ``a_shape``."""
    p = a_shape[-1] if len(a_shape) <= 3 and a_shape[-1] == a_shape[-2] else None
    if p is None:
        p = math.isqrt(math.prod(a_shape))
        return scale * torch.eye(p, dtype=getattr(torch, dtype)).reshape(a_shape)
    return scale * torch.eye(p, dtype=getattr(torch, dtype))


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize(("op", "a_shape", "b_shape", "params"), SAVED_CASES)
def test_graph_saves_no_more_than_torch_linalg(ops, op, a_shape, b_shape, params, dtype):
    rng = rng_for("saved", op, a_shape, b_shape, dtype)
    a = random(rng, a_shape, dtype) + _identity_like(a_shape, dtype)
    args = [a] if b_shape is None else [a, random(rng, b_shape, dtype)]
    args = [x.requires_grad_() for x in args]
    native = getattr(torch.linalg, op)
    if op == "solve" and len(b_shape) == 1:
        native = _native_solve
    mine = _saved_bytes(getattr(ops, op), *args, **params)
    theirs = _saved_bytes(native, *args, **params)
    assert 0 < mine <= theirs


@pytest.mark.parametrize(
    ("op", "a_shape", "b_shape", "params"),
    [
        ("solve", (2, 3, 3), (2, 3, 2), {}),
        ("solve", (2, 3, 3), (2, 2, 3), {"left": False}),
        ("solve", (3, 3), (3,), {}),
        ("solve_ex", (2, 3, 3), (2, 3, 2), {}),
        ("solve_ex", (2, 3, 3), (2, 2, 3), {"left": False}),
        ("tensorsolve", (2, 3, 6), (2, 3), {}),
    ],
)
def test_b_changed_in_place_after_the_forward(ops, op, a_shape, b_shape, params):
    """The graph keeps b's shape and dtype, not b: b may change before backward, as with
    torch.linalg.solve, and the gradients are those of the b given."""
    rng = rng_for("inplace", op, a_shape, b_shape, params)
    a0 = random(rng, a_shape, "float64") + _identity_like(a_shape)
    b0 = random(rng, b_shape, "float64")
    f = getattr(ops, op)
    value = (lambda *x, **p: f(*x, **p)[0]) if op.endswith("_ex") else f

    def grads(mutate):
        a = a0.clone().requires_grad_()
        b_leaf = b0.clone().requires_grad_()
        b = b_leaf * 1  # not a leaf: it may change in place
        x = value(a, b, **params)
        if mutate:
            b.mul_(2)
        (x * x).sum().backward()
        return a.grad, b_leaf.grad

    for got, want in zip(grads(True), grads(False)):
        torch.testing.assert_close(got, want)


def test_b_is_not_kept_alive_by_the_graph(ops):
    import weakref

    rng = rng_for("alive")
    a = well_conditioned(rng, (), 4, "float64").requires_grad_()
    b = random(rng, (4, 2), "float64").requires_grad_()
    c = b * 1
    ref = weakref.ref(c)
    x = ops.solve(a, c)
    del c
    assert ref() is None
    x.sum().backward()
    assert b.grad is not None


# -- inputs of other frameworks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "args", "arg", "kind"),
    [
        ("solve", ("A", np.ones((3, 2))), "b", "numpy.ndarray"),
        ("solve", (np.eye(3), "B"), "a", "numpy.ndarray"),
        ("solve_ex", ("A", [1.0, 2.0, 3.0]), "b", "list"),
        ("solve", ("A", 1.0), "b", "float"),
        ("inv", (np.eye(3),), "a", "numpy.ndarray"),
        ("inv_ex", ([[1.0, 0.0], [0.0, 1.0]],), "a", "list"),
        ("tensorinv", (np.eye(4).reshape(2, 2, 2, 2),), "a", "numpy.ndarray"),
        ("tensorsolve", ("A", np.ones(3)), "b", "numpy.ndarray"),
        ("inv", (2.0,), "a", "float"),
    ],
)
def test_other_frameworks_arrays_raise_type_error(ops, op, args, arg, kind):
    """As torch.linalg: a TypeError (never AttributeError) naming the argument and its type."""
    tensors = {"A": torch.eye(3, dtype=torch.float64), "B": torch.ones(3, 2, dtype=torch.float64)}
    args = [tensors[x] if isinstance(x, str) else x for x in args]
    message = f"invad.{op}: `{arg}` is a {kind}; the 'torch' backend takes torch.Tensor"
    with pytest.raises(TypeError, match=re.escape(message)):
        getattr(ops, op)(*args)
    # twice: the memoized validation never remembers a foreign signature
    with pytest.raises(TypeError, match=re.escape(message)):
        getattr(ops, op)(*args)


# -- the LU family: lu_factor, lu_solve, solve_triangular, det, slogdet ---------------------------

#: (id, op, input shapes, params). lu_solve's shapes are a's and b's: a is factored by
#: torch.linalg.lu_factor, whose (LU, pivots) go straight into invad's lu_solve.
LU_CASES = [
    ("lu_factor-square", "lu_factor", [(2, 3, 3)], {}),
    ("lu_factor-wide", "lu_factor", [(2, 4)], {}),
    ("lu_factor-tall", "lu_factor", [(2, 4, 2)], {}),
    ("lu_factor_ex", "lu_factor_ex", [(3, 3)], {}),
    ("lu_solve", "lu_solve", [(2, 3, 3), (2, 3, 2)], {}),
    ("lu_solve-adjoint", "lu_solve", [(2, 3, 3), (3, 1)], {"adjoint": True}),
    ("lu_solve-right", "lu_solve", [(3, 3), (2, 1, 3)], {"left": False}),
    (
        "lu_solve-right-adjoint",
        "lu_solve",
        [(2, 3, 3), (2, 2, 3)],
        {"left": False, "adjoint": True},
    ),
    ("solve_triangular-upper", "solve_triangular", [(2, 3, 3), (2, 3, 2)], {"upper": True}),
    (
        "solve_triangular-lower-unit",
        "solve_triangular",
        [(2, 3, 3), (3, 1)],
        {"upper": False, "unitriangular": True},
    ),
    (
        "solve_triangular-right",
        "solve_triangular",
        [(3, 3), (2, 2, 3)],
        {"upper": True, "left": False},
    ),
    ("det", "det", [(2, 3, 3)], {}),
    ("slogdet", "slogdet", [(2, 3, 3)], {}),
    # The Cholesky half, as functions of every matrix: of a's Hermitian part, of c's triangle.
    ("cholesky", "cholesky", [(2, 3, 3)], {}),
    ("cholesky-upper", "cholesky", [(3, 3)], {"upper": True}),
    ("cholesky_ex", "cholesky_ex", [(2, 3, 3)], {}),
    ("cholesky_solve", "cholesky_solve", [(2, 3, 3), (2, 3, 2)], {}),
    ("cholesky_solve-upper-vector", "cholesky_solve", [(3, 3), (3,)], {"upper": True}),
    ("solve-pos", "solve", [(2, 3, 3), (2, 3, 2)], {"assume_a": "pos"}),
    ("solve-pos-right", "solve", [(3, 3), (2, 2, 3)], {"assume_a": "pos", "left": False}),
]


def _hermitian_part(a):
    # conj_physical, not the conjugate view of a.mH: torch's batched forward mode (gradcheck's
    # check_batched_forward_grad) fails an internal assert on that view of a complex tensor.
    return (a + a.transpose(-2, -1).conj_physical()) / 2


def lu_case(ops, op, shapes, params, dtype):
    """Inputs (leaves that require grad) and the op as a function of its floating inputs
    returning its differentiable outputs: invad's, and torch.linalg's."""
    rng = rng_for("lu", op, shapes, params, dtype)
    xs = [
        torch.from_numpy(x) for x in C.primals(op, C.Shape("t", tuple(shapes), params), dtype, rng)
    ]
    if op == "lu_solve":
        lu, pivots = torch.linalg.lu_factor(xs[0])
        xs = [lu, xs[1]]
        mine = lambda lu, b: ops.lu_solve(lu, pivots, b, **params)  # noqa: E731
        native = lambda lu, b: torch.linalg.lu_solve(lu, pivots, b, **params)  # noqa: E731
    elif op.startswith("lu_factor"):
        mine = lambda a: getattr(ops, op)(a)[0]  # noqa: E731
        native = lambda a: torch.linalg.lu_factor_ex(a)[0]  # noqa: E731
    elif op == "solve_triangular":
        mine = lambda a, b: ops.solve_triangular(a, b, **params)  # noqa: E731
        native = lambda a, b: torch.linalg.solve_triangular(a, b, **params)  # noqa: E731
    elif op == "det":
        mine, native = ops.det, torch.linalg.det
    elif op.startswith("cholesky_solve"):
        upper = params["upper"] if params else False
        tri = torch.triu if upper else torch.tril
        mine = lambda c, b: ops.cholesky_solve(tri(c), b, upper=upper)  # noqa: E731

        def native(c, b):
            matrix = b if b.ndim > 1 else b[:, None]
            x = torch.cholesky_solve(matrix, tri(c), upper=upper)
            return x if b.ndim > 1 else x[:, 0]

    elif op.startswith("cholesky"):
        mine = lambda a: getattr(ops, op)(_hermitian_part(a), **params)  # noqa: E731
        native = lambda a: torch.linalg.cholesky(_hermitian_part(a), **params)  # noqa: E731
        if op == "cholesky_ex":
            mine = lambda a: ops.cholesky_ex(_hermitian_part(a))[0]  # noqa: E731
    elif op == "solve":  # assume_a="pos", against torch's general solve
        mine = lambda a, b: ops.solve(_hermitian_part(a), b, **params)  # noqa: E731
        left = params.get("left", True)
        native = lambda a, b: _native_solve(_hermitian_part(a), b, left=left)  # noqa: E731
    else:
        mine = lambda a: tuple(ops.slogdet(a))  # noqa: E731
        native = lambda a: tuple(torch.linalg.slogdet(a))  # noqa: E731
    return [x.requires_grad_() for x in xs], mine, native


@pytest.fixture(params=LU_CASES, ids=[c[0] for c in LU_CASES])
def lu_family_case(request):
    return request.param[1:]


def _loss(y):
    """A real loss of one output or several, with second derivatives in every direction."""
    return sum((torch.sin(t.real) + t.abs() ** 2).sum() for t in _flat(y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_family_gradcheck_and_gradgradcheck(ops, lu_family_case, dtype):
    """Finite differences against backward, forward mode, both batched (torch's legacy vmap
    over the derivatives), and second order: reverse over reverse and forward over reverse.

    In fast mode (a random projection u^T J v of each Jacobian against the same projection of
    finite differences): the full Jacobians of these ops cost minutes to difference (torch's
    own lu_factor and lu_solve alike), and the next test compares them entry for entry with
    torch.linalg's, to second order.
    """
    op, shapes, params = lu_family_case
    xs, mine, _ = lu_case(ops, op, shapes, params, dtype)
    assert gradcheck(
        mine,
        tuple(xs),
        check_forward_ad=True,
        check_batched_grad=True,
        check_batched_forward_grad=True,
        fast_mode=True,
    )
    assert gradgradcheck(
        mine, tuple(xs), check_fwd_over_rev=True, check_batched_grad=True, fast_mode=True
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_family_matches_torch_linalg_at_first_and_second_order(ops, lu_family_case, dtype):
    """Values, gradients (backward), tangents (forward-mode dual tensors) and Hessian-vector
    products (double backward) against torch.linalg's own."""
    import torch.autograd.forward_ad as fwAD

    op, shapes, params = lu_family_case
    xs, mine, native = lu_case(ops, op, shapes, params, dtype)
    got, want = _flat(mine(*xs)), _flat(native(*xs))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert rel_err(g, w) < 1e-12
    if op.startswith("lu_factor"):
        pivots = getattr(ops, op)(xs[0])[1]
        assert torch.equal(pivots, torch.linalg.lu_factor_ex(xs[0])[1]) and not pivots.requires_grad
    rng = rng_for("directions", op, shapes, dtype)
    vs = [random(rng, tuple(x.shape), dtype) for x in xs]
    g_mine = torch.autograd.grad(_loss(mine(*xs)), xs, create_graph=True)
    g_native = torch.autograd.grad(_loss(native(*xs)), xs, create_graph=True)
    for gm, gn, x in zip(g_mine, g_native, xs, strict=True):
        assert gm.dtype == x.dtype and rel_err(gm, gn) < 1e-10
    _same(torch.autograd.grad(g_mine, xs, vs), torch.autograd.grad(g_native, xs, vs), 1e-9)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(x.detach(), v) for x, v in zip(xs, vs)]
        t_mine = [fwAD.unpack_dual(y).tangent for y in _flat(mine(*duals))]
        t_native = [fwAD.unpack_dual(y).tangent for y in _flat(native(*duals))]
    for tm, tn in zip(t_mine, t_native, strict=True):
        tn = torch.zeros_like(tm) if tn is None else tn  # real slogdet: torch's sign has none
        assert rel_err(tm, tn) < 1e-10


#: One case per op and variant for the torch.func transforms (each is compiled by functorch).
LU_FUNC_CASES = [
    c
    for c in LU_CASES
    if c[0]
    in {
        "lu_factor-wide",
        "lu_factor-tall",
        "lu_solve",
        "lu_solve-right-adjoint",
        "solve_triangular-lower-unit",
        "solve_triangular-right",
        "det",
        "slogdet",
        "cholesky",
        "cholesky_solve",
        "solve-pos",
    }
]

LU_TRANSFORMS = {
    "jacrev": lambda f: torch.func.jacrev(f, argnums=0),
    "jacfwd": lambda f: torch.func.jacfwd(f, argnums=0),
    "hessian": lambda f: torch.func.hessian(f, argnums=0),
    "vmap-grad": lambda f: torch.func.vmap(torch.func.grad(f, argnums=0)),
}


@pytest.mark.parametrize("name", list(LU_TRANSFORMS))
@pytest.mark.parametrize("case", LU_FUNC_CASES, ids=[c[0] for c in LU_FUNC_CASES])
def test_lu_family_torch_func_transforms_match_torch_linalg(ops, case, name):
    """jacrev, jacfwd, hessian and vmap of grad on a real loss of every output of the op
    (with respect to its first input), against the same on torch.linalg's op."""
    _, op, shapes, params = case
    xs, mine, native = lu_case(ops, op, shapes, params, "float64")
    others = [x.detach() for x in xs[1:]]
    if name.startswith("vmap"):  # three examples of the first input
        rng = rng_for("vmap-examples", op)
        first = torch.stack(
            [xs[0].detach() + 0.1 * random(rng, tuple(xs[0].shape), "float64") for _ in range(3)]
        )
    else:
        first = xs[0].detach()

    def loss(f):
        return lambda x: _loss(f(x, *others))

    _same(LU_TRANSFORMS[name](loss(mine))(first), LU_TRANSFORMS[name](loss(native))(first))


@pytest.mark.parametrize("case", LU_FUNC_CASES, ids=[c[0] for c in LU_FUNC_CASES])
def test_lu_family_vmap_matches_a_python_loop(ops, case):
    """torch.func.vmap of the op itself (every output, pivots and info included)."""
    _, op, shapes, params = case
    rng = rng_for("vmap-op", op)
    xs, _, _ = lu_case(ops, op, shapes, params, "float64")
    xs = [
        torch.stack([x.detach() + 0.1 * random(rng, tuple(x.shape), "float64") for _ in range(3)])
        for x in xs
    ]
    if op == "lu_solve":  # factor each example with torch, the pivots batched too
        lu, pivots = torch.linalg.lu_factor(xs[0])
        xs = [lu, pivots, xs[1]]
    fn = getattr(ops, op)
    batched = torch.func.vmap(lambda *z: fn(*z, **params))(*xs)
    looped = [fn(*(x[i] for x in xs), **params) for i in range(3)]
    for k, got in enumerate(_flat(batched)):
        want = torch.stack([_flat(y)[k] for y in looped])
        assert got.dtype == want.dtype
        _same(got, want, 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_solve_of_lu_factor_has_the_derivatives_of_solve(ops, dtype):
    """Through torch's autograd: gradients, Hessian-vector products (double backward),
    forward-mode tangents and jacrev of lu_solve(*lu_factor(a), b) and of solve(a, b)."""
    import torch.autograd.forward_ad as fwAD

    rng = rng_for("lu-is-solve", dtype)
    a = well_conditioned(rng, (2,), 4, dtype).requires_grad_()
    b = random(rng, (2, 4, 3), dtype).requires_grad_()
    va, vb = random(rng, (2, 4, 4), dtype), random(rng, (2, 4, 3), dtype)
    for params in ({}, {"left": False, "b": b.mT}, {"adjoint": True}):
        rhs = params.pop("b", b)
        left = params.get("left", True)

        def factored(a, b, params=params):
            return ops.lu_solve(*ops.lu_factor(a), b, **params)

        def direct(a, b, params=params, left=left):
            return ops.solve(a.mH if params.get("adjoint") else a, b, left=left)

        def first_and_second(f, rhs=rhs):
            (ga, gb) = torch.autograd.grad(_loss(f(a, rhs)), (a, b), create_graph=True)
            return (ga, gb, *torch.autograd.grad((ga, gb), (a, b), (va, vb)))

        _same(first_and_second(factored), first_and_second(direct), 1e-10)
        with fwAD.dual_level():
            duals = (
                fwAD.make_dual(a.detach(), va),
                fwAD.make_dual(rhs.detach(), vb.mT if not left else vb),
            )
            _same(
                fwAD.unpack_dual(factored(*duals)).tangent,
                fwAD.unpack_dual(direct(*duals)).tangent,
                1e-10,
            )
        if dtype == "float64":  # torch.func's Jacobians take real inputs only
            jac = torch.func.jacrev(lambda a, f, rhs=rhs: f(a, rhs.detach()), argnums=0)
            _same(jac(a.detach(), factored), jac(a.detach(), direct), 1e-10)


def _five_point(f, a, da, step=1e-3):
    """Central differences of order 4 of f at a along da (det is a polynomial: exact but for
    the step**4 term)."""
    return (
        -f(a + 2 * step * da) + 8 * f(a + step * da) - 8 * f(a - step * da) + f(a - 2 * step * da)
    ) / (12 * step)


SINGULAR_KINDS = ("zero-row", "rank-n-1", "rank-n-2")


def singular(kind, dtype, rng, n=4):
    x = C.random_array(rng, (n, n), dtype)
    if kind == "zero-row":  # rank n-1 with an exact zero pivot
        x[1] = 0
    elif kind == "rank-n-1":  # a product: singular only to rounding
        x = C.random_array(rng, (n, n - 1), dtype) @ C.random_array(rng, (n - 1, n), dtype)
    else:
        x = C.random_array(rng, (n, n - 2), dtype) @ C.random_array(rng, (n - 2, n), dtype)
    return torch.from_numpy(x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", SINGULAR_KINDS)
def test_det_derivative_at_singular_matrices(ops, kind, dtype):
    """The adjugate, through backward, forward mode and torch.func.grad (where no value can be
    read), against central differences and torch.linalg.det's gradient; a well-conditioned
    matrix beside it in the batch keeps its own derivatives, the second order included."""
    rng = rng_for("singular-det", kind, dtype)
    a = torch.stack([singular(kind, dtype, rng), well_conditioned(rng, (), 4, dtype)])
    da = random(rng, (2, 4, 4), dtype)
    w = random(rng, (2,), dtype)
    # The gradient against differences along da, ...

    def loss(f):
        return lambda a: (w.conj() * f(a)).real.sum()  # <w, det(a)>: its gradient is w adj(a)^H

    leaf = a.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(ops.det)(leaf), leaf)
    assert (
        abs((grad.conj() * da).real.sum().item() - _five_point(loss(ops.det), a, da).item()) < 1e-8
    )
    # torch.linalg.det's own gradient where it takes singular input into account: in grad
    # mode (its first-order shortcut perturbs a zero pivot and is off at exact zeros).
    (native,) = torch.autograd.grad(loss(torch.linalg.det)(leaf), leaf, create_graph=True)
    _same(grad, native, 1e-8)
    _same(torch.func.grad(loss(ops.det))(a), grad, 1e-10)  # where if_any cannot read det
    # Forward mode: the tangent of det against differences.
    _same(torch.func.jvp(ops.det, (a,), (da,))[1], _five_point(torch.linalg.det, a, da), 1e-8)

    # Second order, on both elements: the derivative of the gradient along da, forward over
    # reverse and double backward, against differences of gradients (the singular matrix
    # once gave wrong second derivatives here: its adjugate was made without a graph).
    def gradient(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad(loss(ops.det)(x), x)[0]

    reference = _five_point(gradient, a, da)
    hvp = torch.func.jvp(torch.func.grad(loss(ops.det)), (a,), (da,))[1]
    _same(hvp, reference, 1e-6)
    leaf = a.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(ops.det)(leaf), leaf, create_graph=True)
    (double,) = torch.autograd.grad((grad.conj() * da).real.sum(), leaf)
    _same(double, reference, 1e-6)


@pytest.mark.parametrize(
    ("op", "args", "params"),
    [
        ("lu_solve", ("LU", "pivots", "b"), {}),
        ("solve_triangular", ("a", "b"), {"upper": True}),
        ("solve_triangular", ("a", "b"), {"upper": False, "left": False}),
    ],
)
def test_singular_lu_solve_and_solve_triangular_raise_naming_op_shape_and_index(
    ops, op, args, params
):
    rng = rng_for("singular-lu", op, params)
    a = well_conditioned(rng, (3,), 3, "float64")
    a[1, 2, 2] = 0.0  # batch element 1: a zero on the diagonal (of U, of the triangle)
    lu, pivots = a, torch.tensor([1, 2, 3], dtype=torch.int32).expand(3, 3)
    values = {"LU": lu, "pivots": pivots, "a": a, "b": random(rng, (3, 3, 3), "float64")}
    with pytest.raises(torch.linalg.LinAlgError) as info:
        getattr(ops, op)(*(values[k] for k in args), **params)
    message = str(info.value)
    assert f"invad.{op}" in message and "(3, 3, 3)" in message and "(1,)" in message
    assert "[2, 2]" in message  # what is zero: U[2, 2] or a[2, 2]


def test_lu_factor_det_slogdet_and_ex_never_raise(ops):
    a = well_conditioned(rng_for("never"), (3,), 3, "float64")
    a[1] = 0.0
    lu, pivots = ops.lu_factor(a)
    assert torch.equal(lu, torch.linalg.lu_factor_ex(a)[0])
    assert ops.lu_factor_ex(a)[2].tolist() == [0, 1, 0]
    assert ops.det(a)[1] == 0 and ops.det(a)[0] != 0
    sign, logabsdet = ops.slogdet(a)
    assert sign[1] == 0 and logabsdet[1] == -math.inf and torch.isfinite(logabsdet[[0, 2]]).all()
    pivots_ok = torch.linalg.lu_factor(a[0])[1]
    assert pivots.dtype == torch.int32 and torch.equal(pivots[0], pivots_ok)


def test_lu_solve_takes_torch_pivots_of_either_integer_dtype_and_promotes_floats_only(ops):
    rng = rng_for("pivots-dtype")
    a = well_conditioned(rng, (2,), 3, "float64")
    b = random(rng, (2, 3, 2), "complex128")
    lu, pivots = torch.linalg.lu_factor(a)
    x = ops.lu_solve(lu, pivots, b)  # float64 LU, complex b: a complex solution
    assert x.dtype == torch.complex128
    _same(x, torch.linalg.solve(a.to(b.dtype), b), 1e-12)
    assert torch.equal(ops.lu_solve(lu, pivots.long(), b), x)
    lu_, b_ = lu.clone().requires_grad_(), b.clone().requires_grad_()
    g_lu, g_b = torch.autograd.grad(ops.lu_solve(lu_, pivots, b_).abs().pow(2).sum(), (lu_, b_))
    assert g_lu.dtype == torch.float64 and g_b.dtype == torch.complex128
    with pytest.raises(ValueError, match=r"invad\.lu_solve: `pivots` must be an integer"):
        ops.lu_solve(lu, pivots.double(), b)


def test_pivots_changed_in_place_are_checked_again(ops):
    """The pivots' check is read once per pivots tensor (factor once, solve many), as long as
    it is unchanged: pivots changed in place (their version counter moves) are read anew, on
    the next forward and in a backward that made its graph with the good ones."""
    rng = rng_for("pivots-in-place")
    a = well_conditioned(rng, (2,), 3, "float64")
    b = random(rng, (2, 3, 1), "float64")
    lu, pivots = torch.linalg.lu_factor(a)
    lu = lu.requires_grad_()
    x = ops.lu_solve(lu, pivots, b)  # checked, and the check remembered
    _same(x, torch.linalg.solve(a, b), 1e-12)
    pivots[1, 0] = 0  # 1-based: row 0 does not exist
    with pytest.raises(ValueError, match=r"invad\.lu_solve: .*pivots\[1, 0\] = 0, expected 1 to 3"):
        ops.lu_solve(lu, pivots, b)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        x.sum().backward()  # torch's own guard: the graph saved the pivots before the change


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_cholesky_of_every_memory_layout_is_torchs(ops, layout, upper, dtype):
    """The torch kernel factors a row-major matrix through its transpose (no copy for LAPACK)
    and any other layout directly: every layout gives torch.linalg.cholesky's factor and
    gradient, and cholesky_solve with it solve's solution."""
    rng = rng_for("cholesky-layout", layout, upper, dtype)
    m = torch.from_numpy(C.positive_definite(rng, (2,), 4, dtype))
    if layout == "transposed":  # column-major storage of the same (Hermitian) matrix
        m = m.mT.contiguous().mT
    elif layout == "strided":  # every other column of a wider array
        wide = torch.zeros(2, 4, 8, dtype=m.dtype)
        wide[..., ::2] = m
        m = wide[..., ::2]
    assert m.is_contiguous() == (layout == "contiguous")
    m.requires_grad_()
    cbar = random(rng, (2, 4, 4), dtype)
    c = ops.cholesky(m, upper=upper)
    expected = torch.linalg.cholesky(m, upper=upper)
    _same(c, expected, 1e-12)
    (got,) = torch.autograd.grad(c, m, cbar)
    (want,) = torch.autograd.grad(expected, m, cbar)
    # invad's cotangent is Hermitian; torch's complex one is not, and counts by its
    # Hermitian part (a Hermitian a's tangents are Hermitian)
    _same(got, (want + want.mH) / 2, 1e-10)
    b = random(rng, (2, 4, 3), dtype)
    _same(ops.cholesky_solve(c, b, upper=upper), torch.linalg.solve(m, b), 1e-10)
