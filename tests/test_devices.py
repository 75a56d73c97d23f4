"""One device-placement contract, run on every backend present.

- outputs (and ``info``) live on the inputs' device;
- ``install(device=d)`` gives ops whose ``device`` is ``d``, and what they create lands there;
- ``a`` and ``b`` on different devices raise ``ValueError`` naming both.

The backends come from INVAD_TEST_BACKENDS, as for the conformance suite.
Backends with a single device check what one device allows and say why the
rest is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

import invad
from invad.rules import RULES
from invad.testing import Harness
from invad.testing import cases as C
from invad.testing.plugin import env_backends

BACKENDS = env_backends()


def args(h: Harness, op: str) -> tuple[C.Shape, tuple[np.ndarray, ...]]:
    """A batched case of ``op``: its shape family and inputs (lu_solve's factored by the
    backend on its default device: a device without data, torch's meta, has no factor to
    read back)."""
    shape = C.SHAPES[op][1]
    maker = Harness(h.backend.name) if op == "lu_solve" else h
    return shape, maker.inputs(op, shape, "float64", np.random.default_rng(0))


# Devices a backend does not list as compute devices but that keep the contract all the
# same: torch's `meta` tensors carry shapes, dtypes and a device and no data, so placement
# and the mixed-device error are testable with them on a CPU-only machine.
EXTRA_DEVICES = {"torch": ["meta"]}


def device_names(name: str) -> list[str]:
    return list(invad.install(name).backend.devices()) + EXTRA_DEVICES.get(name, [])


def placements() -> list:
    return [
        pytest.param(name, device, id=f"{name}-{device}")
        for name in BACKENDS
        for device in device_names(name)
    ]


@pytest.mark.parametrize(("name", "device"), placements())
@pytest.mark.parametrize("op", list(RULES))
def test_outputs_live_on_the_input_device(name, device, op):
    h = Harness(name, device)
    assert h.ops.device == h.backend.resolve_device(device)
    rule = RULES[op]
    shape, primals = args(h, op)
    inputs = [h.put(x) for x in primals]
    out = getattr(h.ops, op)(*inputs, **shape.params)
    for result in out if rule.returns_info or rule.multi else (out,):  # info, pivots too
        assert h.backend.device_of(result) == h.backend.device_of(inputs[0])
    tangents = [None if integer else x for x, integer in zip(inputs, rule.integer)]
    _, tangent = h.ops.jvp(op, inputs, tangents, **shape.params)
    for t in tangent if rule.returns_info or rule.multi else (tangent,):
        if t is not None:
            assert h.backend.device_of(t) == h.backend.device_of(inputs[0])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("op", ["solve", "solve_ex", "tensorsolve"])
def test_mixed_devices_are_rejected_naming_both(name, op):
    devices = device_names(name)
    if len(devices) < 2:
        pytest.skip(f"backend {name!r} has one device ({devices[0]}): nothing to mix")
    h = Harness(name, devices[0])
    shape, (a, b) = args(h, op)
    first = h.backend.from_numpy(a, h.backend.resolve_device(devices[0]))
    second = h.backend.from_numpy(b, h.backend.resolve_device(devices[1]))
    with pytest.raises(
        ValueError, match=f"invad.{op}: `a` is on device .* but `b` is on device"
    ) as info:
        getattr(h.ops, op)(first, second, **shape.params)
    message = str(info.value)
    assert (
        str(h.backend.device_of(first)) in message and str(h.backend.device_of(second)) in message
    )


@pytest.mark.parametrize("name", BACKENDS)
def test_installing_on_each_device_gives_distinct_cached_ops(name):
    devices = device_names(name)
    ops = [invad.install(name, device=d) for d in devices]
    assert [invad.install(name, device=d) for d in devices] == ops
    assert len({id(o) for o in ops}) == len(devices)
