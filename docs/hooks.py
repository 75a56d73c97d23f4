"""MkDocs hook: the per-op pages come from the rule contracts, so code and docs cannot drift.

For every rule in ``invad.rules()`` a page ``ops/<name>.md`` is generated at
build time, and listed under "Ops" in the navigation; ``ops/index.md`` gets
the table of all of them. Nothing about an op's mathematics is written by
hand in ``docs/``. A new rule needs no edit here or in ``mkdocs.yml``.

The same pages are also committed in ``docs/ops/``, so that links to them work
when reading ``docs/`` in the repository. ``python docs/hooks.py`` rewrites
them; ``tests/test_docs.py`` fails while they differ from the rules.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import invad
from invad.rules import RULES

DOCS = Path(__file__).resolve().parent


def _page(name: str) -> str:
    rule = RULES[name]
    c = rule.contract
    params = "".join(f"| `{p.name}` | `{p.default!r}` | {p.meaning} |\n" for p in c.params)
    param_table = (
        f"| parameter | default | meaning |\n|---|---|---|\n{params}" if params else "None.\n"
    )
    return f"""# `{c.name}`

{c.summary}

Signature: `ops.{c.name}{inspect.signature(getattr(invad.install(), c.name))}`

| | |
|---|---|
| inputs | {", ".join(f"`{i}`" for i in c.inputs)} |
| outputs | {", ".join(f"`{o}`" for o in c.outputs)} |
| differentiable outputs | {", ".join(f"`{o}`" for o in c.differentiable_outputs)} |
| dtypes | {", ".join(c.dtypes)} |

## Parameters

{param_table}
## Derivatives

| | |
|---|---|
| forward map | `{c.forward}` |
| linearization (JVP) | `{c.linearization}` |
| VJP, adjoint convention (PyTorch, `ops.vjp`) | `{c.adjoint}` |
| VJP, linear transpose (JAX's `jax.vjp`) | `{c.transpose}` |

{c.convention}

## Shapes and batching

{c.shapes}

## Domain and singular input

Valid for: {c.domain}.

{c.singular}

*Generated from `invad.rules()` by `docs/hooks.py`; do not edit by hand.*
"""


def _index() -> str:
    rows = "".join(
        f"| [`{c.name}`]({c.name}.md) | {c.summary} | `{c.linearization}` | `{c.adjoint}` |\n"
        for c in invad.rules()
    )
    return (
        "# Ops\n\nEvery op invad installs, with its linearization and adjoint, from "
        "`invad.rules()`.\n\n| op | what | JVP | VJP (adjoint) |\n|---|---|---|---|\n" + rows
    )


def pages() -> dict[str, str]:
    """Every generated page: path under ``docs/`` and its text."""
    return {"ops/index.md": _index(), **{f"ops/{n}.md": _page(n) for n in RULES}}


def stale(docs: Path = DOCS) -> list[str]:
    """The generated pages whose copy in ``docs`` is missing or differs, and stray op pages."""
    expected = pages()
    differ = [p for p, text in expected.items() if _read(docs / p) != text]
    stray = [
        f"ops/{f.name}"
        for f in sorted((docs / "ops").glob("*.md"))
        if f"ops/{f.name}" not in expected
    ]
    return differ + stray


def write(docs: Path = DOCS) -> list[str]:
    """Write the generated pages into ``docs`` (and remove op pages of rules that are gone)."""
    changed = stale(docs)
    expected = pages()
    for path in changed:
        target = docs / path
        if path in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected[path])
        else:
            target.unlink()
    return changed


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def on_config(config: Any) -> Any:
    """List every op page under the nav section "Ops" (``mkdocs.yml`` names the index only)."""
    for item in config.nav or ():
        if isinstance(item, dict) and isinstance(item.get("Ops"), list):
            listed = set(item["Ops"])
            item["Ops"] += [f"ops/{n}.md" for n in RULES if f"ops/{n}.md" not in listed]
    return config


def on_files(files: Any, config: Any) -> Any:
    """The op pages from the rules, in place of the committed copies (which may lag)."""
    from mkdocs.structure.files import File

    for path, text in pages().items():
        committed = files.get_file_from_path(path)
        if committed is not None:
            files.remove(committed)
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    changed = write()
    print("\n".join(f"wrote docs/{p}" for p in changed) or "docs/ops is up to date")
    sys.exit(0)
