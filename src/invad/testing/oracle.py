"""Replay of the vendored oracle cases (tensor-ad-oracles, MIT; see data/LICENSE-MIT).

Each case holds inputs, a tangent direction, an output cotangent and
PyTorch's JVP, VJP (adjoint convention) and HVP, checked by central finite
differences. The cases follow ``torch.linalg.solve``, which takes ``b`` of
shape ``a.shape[:-1]`` for a batch of vectors; under invad's array API rule
such a ``b`` is passed as ``b[..., None]`` and the result read as ``x[..., 0]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

ORACLE_FILES = (
    "inv.jsonl",
    "solve.jsonl",
    "lu_factor.jsonl",
    "lu_solve.jsonl",
    "det.jsonl",
    "slogdet.jsonl",
    "cholesky.jsonl",
)


@dataclass(frozen=True)
class OracleCase:
    case_id: str
    op: str
    dtype: str
    params: dict[str, Any]
    inputs: dict[str, np.ndarray]
    pivots: np.ndarray | None  # lu_solve's, 1-based (torch.linalg.lu_factor's)
    direction: dict[str, np.ndarray]
    cotangent: dict[str, np.ndarray]  # per output: "value", or "output_0", "output_1", ...
    jvp: dict[str, np.ndarray]
    vjp: dict[str, np.ndarray]
    hvp: dict[str, np.ndarray] | None
    first_order: tuple[float, float]  # rtol, atol
    second_order: tuple[float, float]

    @property
    def batch_of_vectors(self) -> bool:
        """True where torch reads ``b`` as a batch of vectors and invad would not."""
        if self.op != "solve":
            return False
        a, b = self.inputs["a"], self.inputs["b"]
        return b.ndim > 1 and b.ndim == a.ndim - 1


def tensor(obj: dict[str, Any]) -> np.ndarray:
    data = np.asarray(obj["data"], dtype=np.float64)
    if obj["dtype"].startswith("complex"):
        data = data.reshape(-1, 2)
        data = data[:, 0] + 1j * data[:, 1]
    return data.astype(obj["dtype"]).reshape(obj["shape"])


def load_cases() -> Iterator[OracleCase]:
    folder = resources.files("invad.testing") / "data"
    for name in ORACLE_FILES:
        for line in (folder / name).read_text().splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            (probe,) = raw["probes"]
            ref = probe["pytorch_ref"]
            tol = raw["comparison"]
            params = {k: v for k, v in (raw.get("op_kwargs") or {}).items() if k != "pivot"}
            yield OracleCase(
                case_id=raw["case_id"],
                op=raw["op"],
                dtype=raw["dtype"],
                params=params,
                inputs={k: tensor(v) for k, v in raw["inputs"].items()},
                pivots=tensor(raw["pivots"]) if "pivots" in raw else None,
                direction={k: tensor(v) for k, v in probe["direction"].items()},
                cotangent={k: tensor(v) for k, v in probe["cotangent"].items()},
                jvp={k: tensor(v) for k, v in ref["jvp"].items()},
                vjp={k: tensor(v) for k, v in ref["vjp"].items()},
                hvp={k: tensor(v) for k, v in ref["hvp"].items()} if "hvp" in ref else None,
                first_order=(tol["first_order"]["rtol"], tol["first_order"]["atol"]),
                second_order=(tol["second_order"]["rtol"], tol["second_order"]["atol"]),
            )


@dataclass(frozen=True)
class Replay:
    """An oracle case put in the terms of one invad op.

    Everything mirrors ``ops.jvp`` and ``ops.vjp`` for the op without its
    ``info``: ``primals``, ``tangents``, ``vjp`` and ``hvp`` in input order
    (``None`` for ``pivots``); ``cotangent`` and ``jvp`` one array, or for an
    op with several outputs a tuple (``None`` for ``pivots``). ``pivots`` are
    stored 1-based; :meth:`primals_for` gives them in a backend's convention.
    """

    op: str
    params: dict[str, Any]
    primals: tuple[np.ndarray, ...]
    tangents: tuple[np.ndarray | None, ...]
    cotangent: Any
    jvp: Any
    vjp: tuple[np.ndarray | None, ...]
    hvp: tuple[np.ndarray | None, ...] | None

    def primals_for(self, pivot_base: int) -> tuple[np.ndarray, ...]:
        """The primals with integer inputs (pivots) counted from ``pivot_base``."""
        return tuple(
            (x - 1 + pivot_base).astype(x.dtype) if x.dtype.kind in "iu" else x
            for x in self.primals
        )


def _replay_inputs(case: OracleCase) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Input names as the oracle has them, and the primals in invad's input order."""
    if case.op == "lu_solve":
        assert case.pivots is not None
        return ("a", "pivots", "b"), (case.inputs["a"], case.pivots, case.inputs["b"])
    names = ("a", "b") if case.op == "solve" else ("a",)
    return names, tuple(case.inputs[k] for k in names)


def _per_input(values: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(values.get(k) if k != "pivots" else None for k in names)


def replays(case: OracleCase) -> Iterator[Replay]:
    """The invad ops that this case checks: the op, its ``_ex`` twin, and its tensor form."""
    names, primals = _replay_inputs(case)
    tangents = _per_input(case.direction, names)
    vjp = _per_input(case.vjp, names)
    hvp = _per_input(case.hvp, names) if case.hvp else None
    params = dict(case.params)
    if case.op == "lu_factor":
        cot: Any = (case.cotangent["output_0"], None)
        jvp: Any = (case.jvp["output_0"], None)
    elif case.op == "slogdet":
        cot = (case.cotangent["output_0"], case.cotangent["output_1"])
        jvp = (case.jvp["output_0"], case.jvp["output_1"])
    else:
        cot, jvp = case.cotangent["value"], case.jvp["value"]
    if case.op == "cholesky":
        # The oracle differentiates g(a) = cholesky(a + a^H): replayed as cholesky at
        # a' = a + a^H along da + da^H. g's cotangent of a is h^*(Abar) = 2 Abar for the
        # Hermitian cotangent Abar of cholesky's input, and likewise its HVP.
        (a,), (da,) = primals, tangents
        primals = (a + np.conj(np.swapaxes(a, -1, -2)),)
        tangents = (da + np.conj(np.swapaxes(da, -1, -2)),)
        vjp = tuple(None if v is None else v / 2 for v in vjp)
        hvp = tuple(None if v is None else v / 2 for v in hvp) if hvp else None
    if case.batch_of_vectors:
        primals = (primals[0], primals[1][..., None])
        tangents = (tangents[0], tangents[1][..., None])
        vjp = (vjp[0], vjp[1][..., None])
        hvp = (hvp[0], hvp[1][..., None]) if hvp else None
        cot, jvp = cot[..., None], jvp[..., None]
    with_ex = ("inv", "solve", "lu_factor", "cholesky")
    twins = (case.op, case.op + "_ex") if case.op in with_ex else (case.op,)
    for op in twins:
        yield Replay(op, params, primals, tangents, cot, jvp, vjp, hvp)
    a = primals[0]
    if case.op == "inv" and a.ndim == 2:
        yield Replay("tensorinv", {"ind": 1}, primals, tangents, cot, jvp, vjp, hvp)
    if case.op == "solve" and a.ndim == 2 and primals[1].ndim == 1:
        yield Replay("tensorsolve", {}, primals, tangents, cot, jvp, vjp, hvp)
