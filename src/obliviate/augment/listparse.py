"""Robust parsing of the numbered / bulleted lists an LLM returns ("Generate 30 questions ...").

Handles ``1.``, ``1)``, ``(1)``, ``1:``, ``Q1.``, ``Question 1:``, ``- ``, ``* ``, ``• ``, markdown
bold/italics around the item or its number, surrounding quotes, items continued on the next
(indented or unmarked) lines, headings and preamble/outro chatter ("Sure! Here are ..."),
blank lines and Windows line endings.
"""

from __future__ import annotations

import re

# a list marker at the start of a line: numbers (1. 1) (1) 1: 1 -), "Q1." / "Question 1:", bullets
_MARKER = re.compile(
    r"""^\s*(?:[*_]{1,2})?\s*
        (?:
            (?:(?:q|question)\s*)?\(?\d{1,4}\s*[.):\]]\s*(?:[-–—]\s*)?   # 1.  1)  (1)  1:  Q1.  Question 1:
          | \d{1,4}\s+[-–—]\s+                                          # 1 - text
          | [-*•·+▪►–]\s+                                               # bullets
        )""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+.*|\*\*[^*]+\*\*:?\s*|[A-Z][\w /&'-]{0,40}:\s*)$")
_QUOTES = "\"'“”‘’`"
_CHATTER = re.compile(
    r"^\s*(?:sure|certainly|of course|absolutely|here (?:are|is)|below (?:are|is)|i hope|let me know|"
    r"these questions|feel free|note:|okay|ok[,!. ])", re.IGNORECASE)


def _clean(item: str) -> str:
    s = re.sub(r"\s+", " ", item).strip()
    # strip markdown emphasis wrapping the whole item or a leading bold label
    for _ in range(2):
        m = re.fullmatch(r"(\*\*|__|\*|_)(.+?)\1", s)
        if m:
            s = m.group(2).strip()
    s = re.sub(r"^\*\*([^*]+)\*\*\s*", lambda m: "" if m.group(1).rstrip().endswith(":") else m.group(1) + " ", s)
    s = s.replace("**", "").strip()
    # surrounding quotes (only when they wrap the whole item)
    while len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES and s.count(s[0]) <= 2:
        s = s[1:-1].strip()
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    return s


def parse_list(text: str, *, min_chars: int = 3) -> list[str]:
    """Return the items of the numbered/bulleted list in ``text``, cleaned, in order.

    A line starting with a list marker opens an item; following lines without a marker are
    appended to it (multi-line items) unless they are blank-separated chatter or headings.
    When the text has no list marker at all, each non-empty line that ends with ``?`` is
    taken as an item (a bare list of questions). Items shorter than ``min_chars`` are dropped.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_list expects a string, got {type(text).__name__}")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    items: list[list[str]] = []
    current: list[str] | None = None
    blank_since = False
    saw_marker = False
    for raw in lines:
        line = raw.rstrip()
        if not line.strip():
            blank_since = True
            continue
        m = _MARKER.match(line)
        if m and line[m.end():].strip():
            saw_marker = True
            current = [line[m.end():]]
            items.append(current)
            blank_since = False
            continue
        if current is not None:
            is_indented = raw[:1] in (" ", "\t")
            if _HEADING.match(line) or (blank_since and not is_indented) or _CHATTER.match(line):
                current = None  # a heading or trailing prose ends the item
            else:
                current.append(line.strip())
        blank_since = False
    if not saw_marker:
        items = [[ln] for ln in (x.strip() for x in lines) if ln.endswith("?") and not _CHATTER.match(ln)]
    out = []
    for parts in items:
        s = _clean(" ".join(parts))
        if len(s) >= min_chars:
            out.append(s)
    return out
