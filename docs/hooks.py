"""MkDocs hook: the per-op pages come from the rule contracts, so code and docs cannot drift.

For every rule in ``invad.rules()`` a page ``ops/<name>.md`` is generated at
build time; ``ops/index.md`` gets the table of all of them. Nothing about an
op's mathematics is written by hand in ``docs/``.
"""

from __future__ import annotations

import inspect

from mkdocs.structure.files import File, Files

import invad
from invad.rules import RULES


def _page(name: str) -> str:
    rule = RULES[name]
    c = rule.contract
    params = "".join(f"| `{p.name}` | `{p.default!r}` | {p.meaning} |\n" for p in c.params)
    param_table = (
        f"| parameter | default | meaning |\n|---|---|---|\n{params}" if params else "None.\n"
    )
    return f"""# `{c.name}`

{c.summary}

```python
ops.{c.name}{inspect.signature(getattr(invad.install(), c.name))}
```

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

*Generated from `invad.rules()` at build time.*
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


def on_files(files: Files, config: dict) -> Files:
    pages = {"ops/index.md": _index(), **{f"ops/{n}.md": _page(n) for n in RULES}}
    for path, text in pages.items():
        files.append(File.generated(config, path, content=text))
    return files
