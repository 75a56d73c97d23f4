"""invad's conformance kit: the checks that every backend must pass.

``run_all(backend)`` returns a row per check (what ``invad check`` prints);
the pieces (:mod:`.cases`, :mod:`.checks`, :mod:`.oracle`) serve the test
suites of invad and of plugin authors.
"""

from __future__ import annotations

from .checks import CHECKS, CheckResult, Harness, run_all

__all__ = ["CHECKS", "CheckResult", "Harness", "run_all"]
