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

ORACLE_FILES = ("inv.jsonl", "solve.jsonl")


@dataclass(frozen=True)
class OracleCase:
    case_id: str
    op: str
    dtype: str
    inputs: dict[str, np.ndarray]
    direction: dict[str, np.ndarray]
    cotangent: np.ndarray
    jvp: np.ndarray
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
            yield OracleCase(
                case_id=raw["case_id"],
                op=raw["op"],
                dtype=raw["dtype"],
                inputs={k: tensor(v) for k, v in raw["inputs"].items()},
                direction={k: tensor(v) for k, v in probe["direction"].items()},
                cotangent=tensor(probe["cotangent"]["value"]),
                jvp=tensor(ref["jvp"]["value"]),
                vjp={k: tensor(v) for k, v in ref["vjp"].items()},
                hvp={k: tensor(v) for k, v in ref["hvp"].items()} if "hvp" in ref else None,
                first_order=(tol["first_order"]["rtol"], tol["first_order"]["atol"]),
                second_order=(tol["second_order"]["rtol"], tol["second_order"]["atol"]),
            )


@dataclass(frozen=True)
class Replay:
    """An oracle case put in the terms of one invad op."""

    op: str
    params: dict[str, Any]
    primals: tuple[np.ndarray, ...]
    tangents: tuple[np.ndarray, ...]
    cotangent: np.ndarray
    jvp: np.ndarray
    vjp: tuple[np.ndarray, ...]
    hvp: tuple[np.ndarray, ...] | None


def replays(case: OracleCase) -> Iterator[Replay]:
    """The invad ops that this case checks: the op, its ``_ex`` twin, and its tensor form."""
    names = ("a",) if case.op == "inv" else ("a", "b")
    primals = tuple(case.inputs[k] for k in names)
    tangents = tuple(case.direction[k] for k in names)
    vjp = tuple(case.vjp[k] for k in names)
    hvp = tuple(case.hvp[k] for k in names) if case.hvp else None
    cot, jvp = case.cotangent, case.jvp
    if case.batch_of_vectors:
        primals = (primals[0], primals[1][..., None])
        tangents = (tangents[0], tangents[1][..., None])
        vjp = (vjp[0], vjp[1][..., None])
        hvp = (hvp[0], hvp[1][..., None]) if hvp else None
        cot, jvp = cot[..., None], jvp[..., None]
    for op in (case.op, case.op + "_ex"):
        yield Replay(op, {}, primals, tangents, cot, jvp, vjp, hvp)
    a = primals[0]
    if case.op == "inv" and a.ndim == 2:
        yield Replay("tensorinv", {"ind": 1}, primals, tangents, cot, jvp, vjp, hvp)
    if case.op == "solve" and a.ndim == 2 and primals[1].ndim == 1:
        yield Replay("tensorsolve", {}, primals, tangents, cot, jvp, vjp, hvp)
