"""How the API reference reads jaxvis's docstrings: MyST markdown with Google-style sections
(``Args:``, ``Attributes:``, ``Returns:``, ``Example:`` ...), which plain MyST would run together into one
paragraph; and dataclass fields without a default shown without the ``None`` that autodoc2 gives them."""

from __future__ import annotations

import re
import textwrap

from autodoc2.render.myst_ import MystRenderer
from myst_parser.parsers.sphinx_ import MystParser

SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Raises|Yields|Example|Examples|Note|Notes):\s*$")
LISTS = {"Args", "Arguments", "Attributes", "Raises"}
# An entry of an argument list: a name (or several, comma-separated), an optional type in parentheses, a colon.
ENTRY = re.compile(r"^([A-Za-z_][\w.]*(?:,\s*[A-Za-z_][\w.]*)*)(\s*\([^)]*\))?:\s+(.*)$")


def google_sections(text: str) -> str:
    """The docstring with each Google-style section made a bold title and, for argument lists, a bullet
    list whose entries start with the name in code."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        found = SECTION.match(lines[i])
        if not found:
            out.append(lines[i])
            i += 1
            continue
        name, block = found.group(1), []
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        body = textwrap.dedent("\n".join(block)).split("\n")
        out += [f"**{name}**", ""]
        if name in LISTS:
            for line in body:
                entry = ENTRY.match(line)
                if entry and not line.startswith(" "):
                    kind = f" *{entry.group(2).strip()}*" if entry.group(2) else ""
                    out.append(f"- `{entry.group(1)}`{kind}: {entry.group(3)}")
                elif line.strip():
                    out.append("  " + line.strip())
        else:
            out += body
        out.append("")
    return "\n".join(out)


class Parser(MystParser):
    """MyST, after the Google-style sections are rewritten (autodoc2_docstring_parser_regexes names it)."""

    def parse(self, inputstring: str, document) -> None:
        super().parse(google_sections(inputstring), document)


class Renderer(MystRenderer):
    """autodoc2's MyST renderer, without the ``:value: None`` of a field that has no default."""

    def render_data(self, item):
        lines = list(super().render_data(item))
        if item.get("value") is None:
            for k in range(len(lines) - 1):
                if lines[k] == ":value: >" and lines[k + 1].strip() == "None":
                    del lines[k:k + 2]
                    break
        yield from lines
