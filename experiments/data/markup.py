"""Markup to plain text: HTML, reStructuredText, Perl POD, GCIDE entries and fortunes.

Each converter keeps the prose and code a reader sees and drops what only a renderer needs
(tags, directives, adornment lines, index entries). They are deliberately simple: the goal is
English training text, not a faithful rendering.
"""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser

_BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "pre", "blockquote",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "section", "title",
}
_SKIP_TAGS = {"script", "style", "head"}
# Navigation bars of DocBook (PostgreSQL) and Sphinx pages repeat on every page.
_SKIP_CLASSES = {"navheader", "navfooter", "related", "sphinxsidebar", "footer", "headerlink"}


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_stack: list[str] = []  # open tags whose content is dropped

    def handle_starttag(self, tag, attrs):
        classes = set((dict(attrs).get("class") or "").split())
        if self.skip_stack or tag in _SKIP_TAGS or classes & _SKIP_CLASSES:
            if tag not in ("br", "hr", "img", "meta", "link", "input"):  # void tags never close
                self.skip_stack.append(tag)
            return
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.skip_stack:
            if self.skip_stack[-1] == tag:
                self.skip_stack.pop()
            return
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip_stack:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return tidy("".join(parser.parts))


_RST_ADORNMENT = re.compile(r"^\s*([=\-~^\"'`#*+:._])\1{2,}\s*$")
_RST_DIRECTIVE = re.compile(r"^\.\.(\s|$)")
_RST_FIELD = re.compile(r"^\s+:[\w -]+:")
_RST_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)\s*(?:<[^`>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def rst_to_text(rst: str) -> str:
    """Drop directives, comments, their option fields and section adornments; unwrap roles."""
    out, in_directive = [], False
    for line in rst.splitlines():
        if _RST_DIRECTIVE.match(line):
            in_directive = True  # its indented options (``:maxdepth: 2``) follow
            continue
        if in_directive and (_RST_FIELD.match(line) or not line.strip()):
            continue
        in_directive = False
        if _RST_ADORNMENT.match(line):
            continue
        line = _RST_ROLE.sub(r"\1", line)
        line = _RST_LINK.sub(r"\1", line)
        line = _RST_LITERAL.sub(r"\1", line)
        out.append(line)
    return tidy("\n".join(out))


_POD_COMMAND = re.compile(r"^=(\w+)\s*(.*)$")
_POD_DOUBLE_CODE = re.compile(r"([BCFILSXZ])<{2,}\s+(.*?)\s+>{2,}")
_POD_CODE = re.compile(r"([BCEFILSXZ])<([^<>]*)>")
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


def _pod_code(match: re.Match) -> str:
    code, body = match.group(1), match.group(2)
    if code in "XZ":  # index entries and null markers render as nothing
        return ""
    if code == "E":
        return _POD_ESCAPES.get(body, chr(int(body)) if body.isdigit() else "")
    if code == "L":  # L<text|target> shows text; L<target> shows the target
        return body.split("|", 1)[0]
    return body


def pod_to_text(pod: str) -> str:
    out = []
    for line in pod.splitlines():
        command = _POD_COMMAND.match(line)
        if command:
            name, rest = command.groups()
            if name.startswith("head") or name == "item":
                out.append(rest.lstrip("*").strip())
            continue  # =over, =back, =cut, =pod, =begin, =for, ...
        out.append(line)
    text = _POD_DOUBLE_CODE.sub(lambda m: _pod_code(m), "\n".join(out))
    while True:  # formatting codes nest (B<C<x>>): expand the innermost until none are left
        expanded = _POD_CODE.sub(_pod_code, text)
        if expanded == text:
            break
        text = expanded
    return tidy(text)


_GCIDE_SOURCE = re.compile(r"^\s*\[(?:[^\]]*(?:Webster|WordNet|PJC|Century|Note)[^\]]*)\]\s*$")


def gcide_to_text(entry: str) -> str:
    """A dictd GCIDE entry without its source tags (``[1913 Webster]``, ``[WordNet 1.5]``)."""
    return tidy("\n".join(line for line in entry.splitlines() if not _GCIDE_SOURCE.match(line)))


def fortune_to_text(fortune: str) -> str:
    # Old fortune files embolden by overstriking ("x\bx"); keep the second character.
    return tidy(re.sub(r".\x08", "", fortune))


_MANY_BLANKS = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """NFC, no trailing spaces, at most one blank line in a row, no surrounding blank lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\xa0", " ")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _MANY_BLANKS.sub("\n\n", text).strip()
