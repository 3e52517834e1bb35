"""One escaping rule for every text normlab prints or writes from data it did not create.

Results files, model files (npz member names, spec kwargs keys), data folders and command-line
arguments are data: their text is shown, never interpreted.

* Terminal (:func:`terminal`, :func:`markup`): C0 and C1 control characters (ESC starts a
  terminal escape sequence, CR rewrites the line), DEL and the Unicode bidirectional overrides
  are replaced by their visible ``\\xNN`` / ``\\uNNNN`` spelling; then, for rich, the markup
  characters are escaped (``rich.markup.escape`` alone leaves control characters through).
* HTML: :func:`html.escape` (``report/html.py``).
* Markdown (:func:`markdown`): HTML special characters become entities (no raw HTML: a
  CommonMark renderer passes ``<script>`` through), every character that makes Markdown syntax
  inside a line is backslash-escaped (no links, emphasis, code spans or table cells from
  data), and line breaks become spaces so a value stays inside its table cell.
"""

from __future__ import annotations

import html
import re

# C0 but tab and newline, DEL, C1, and the bidi controls (embedding, override, isolate)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\r\n\u2028\u2029\x0b\x0c\x85]+")
# the characters that make syntax inside a line (a cell never starts a line, so "#", "-", "+"
# and "1." cannot start a heading or a list there); "<", ">", "&" become entities instead
_MD_PUNCT = re.compile(r"([\\`*_\[\]|~])")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text) -> str:
    """``text`` with every control character shown as its escape (no terminal sequences)."""
    return _CONTROL.sub(_visible, str(text))


def one_line(text) -> str:
    """:func:`terminal`, with line breaks shown too: an error message stays one line."""
    return terminal(str(text).replace("\r", "\\r").replace("\n", "\\n"))


def markup(text) -> str:
    """:func:`terminal`, then rich's markup escape: safe inside a rich markup string."""
    from rich.markup import escape

    return escape(terminal(text))


def markdown(text) -> str:
    """``text`` as literal Markdown inline text (a table cell, a heading): no raw HTML, no
    Markdown syntax, no line break."""
    text = _LINE_BREAKS.sub(" ", str(text))
    text = _CONTROL.sub(_visible, text.replace("\t", " "))
    text = _MD_PUNCT.sub(r"\\\1", text)
    # after the backslashes: an entity's own "&" and ";" are not Markdown syntax
    return html.escape(text, quote=False)
