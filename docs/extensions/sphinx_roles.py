"""A griffe extension for the API reference: the docstrings' Sphinx roles (:class:`X`, :func:`~a.b.f`, ...)
become Markdown code spans, which mkdocstrings renders as code instead of showing the role's text."""

import re

import griffe

# :role:`target`, :role:`~target` (show the last component), :role:`text <target>` (show the text).
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`<]+?)(?:\s*<[^`>]+>)?`")


def as_code_span(match: re.Match) -> str:
    shorten, target = match.group(1), match.group(2).strip()
    return f"`{target.rsplit('.', 1)[-1] if shorten else target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites every object's docstring once the package's tree is loaded (before it is parsed)."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = SPHINX_ROLE.sub(as_code_span, obj.docstring.value)
