"""Griffe extension for the API reference: Sphinx roles in docstrings become links.

invad's docstrings are written in one style, Sphinx's reStructuredText
(``:class:`Ops```, ``:meth:`Backend.load```, ``:param x:`` fields), the style
that ``help()`` and editors show as it is. mkdocstrings parses the fields
(``docstring_style: sphinx``) but prints roles as raw text; this extension
rewrites each role, before rendering, into a cross-reference that links when
the target has a page here and is plain code otherwise.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:role:`target```, ``:role:`~a.b.target```, ``:role:`title <target>```, ``:py:role:...``.
ROLE = re.compile(r":(?:py:)?[a-z]+:`(?P<body>[^`]+)`")
TITLED = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>$")


def resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``'s scope (``Ops`` -> ``invad.ops.Ops``)."""
    head, _, rest = target.lstrip(".").partition(".")
    try:
        full = obj.resolve(head)
    except (griffe.NameResolutionError, KeyError, AttributeError):
        return target.lstrip(".")
    return f"{full}.{rest}" if rest else full


def rewrite(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        body = match["body"].strip()
        titled = TITLED.match(body)
        if titled:
            title, target = titled["title"], titled["target"]
        else:
            target = body.lstrip("~")
            title = target.rsplit(".", 1)[-1] if body.startswith("~") else target.lstrip(".")
        identifier = html.escape(resolve(obj, target.lstrip("~")), quote=True)
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
