"""Markdown-aware chunking of knowledge content (max 2000 chars, 500 overlap, 100 minimum)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 2000
OVERLAP = 500
MIN_CHARS = 100
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Chunk:
    """One chunk with its position and heading context."""

    index: int
    text: str
    start_line: int
    end_line: int
    heading: str | None
    parents: tuple[str, ...]


def _sections(lines: list[str]) -> list[tuple[int, int, str | None, tuple[str, ...]]]:
    out: list[tuple[int, int, str | None, tuple[str, ...]]] = []
    stack: list[tuple[int, str]] = []
    start, heading = 0, None
    parents: tuple[str, ...] = ()
    in_fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            if i > start:
                out.append((start, i, heading, parents))
            level, title = len(m.group(1)), m.group(2)
            stack = [(lv, t) for lv, t in stack if lv < level]
            parents = tuple(t for _, t in stack)
            stack.append((level, title))
            start, heading = i, title
    out.append((start, len(lines), heading, parents))
    return out


def chunk_markdown(text: str) -> list[Chunk]:
    """Split by headings, then by size with overlap; tiny trailing pieces merge into the previous chunk."""
    lines = text.splitlines()
    chunks: list[Chunk] = []
    for start, end, heading, parents in _sections(lines):
        body = "\n".join(lines[start:end]).strip()
        if not body:
            continue
        pos = 0
        while pos < len(body):
            piece = body[pos : pos + MAX_CHARS]
            if pos + MAX_CHARS < len(body):
                cut = max(piece.rfind("\n\n"), piece.rfind(". "))
                if cut > MAX_CHARS // 2:
                    piece = piece[: cut + 1]
            if len(piece.strip()) < MIN_CHARS and chunks and chunks[-1].heading == heading:
                prev = chunks[-1]
                chunks[-1] = Chunk(prev.index, prev.text + "\n" + piece.strip(), prev.start_line,
                                   end, heading, parents)
                break
            first_line = start + body[:pos].count("\n") + 1
            chunks.append(Chunk(len(chunks), piece.strip(), first_line,
                                first_line + piece.count("\n"), heading, parents))
            if pos + len(piece) >= len(body):
                break
            pos += max(len(piece) - OVERLAP, 1)
    return chunks
