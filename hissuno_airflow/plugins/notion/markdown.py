"""Notion blocks as markdown, as the reference converts them (5.7), with nested children rendered.

Inline annotations: code, bold, italic, strikethrough, links. Block types: paragraph; headings ``#``,
``##``, ``###``; bulleted ``- ``; numbered ``1. ``; to-do ``- [x]``/``- [ ]``; toggle as a
``<details>`` element; fenced code with its language; quote and callout (``> `` with the emoji);
divider ``---``; table placeholder ``[Table]``; image markdown (external or file URL, caption as alt)
or ``[Image]``; bookmark link; embed ``[Embed: url]``; child page as a bold link to
``https://www.notion.so/<id without dashes>``; child database ``**[Database: title]**``; equation
``$$…$$``; table of contents placeholder. Breadcrumb, column layouts and unknown types are dropped
(their nested text is kept). Blocks are joined by blank lines; nested children (fetched by the
client, unlike the reference) are indented under list items and rendered after other blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def plain_text(rich: Any) -> str:
    """The plain text of a rich-text array."""
    if not isinstance(rich, list):
        return ""
    return "".join(str(r.get("plain_text") or (r.get("text") or {}).get("content") or "")
                   for r in rich if isinstance(r, Mapping))


def rich_markdown(rich: Any) -> str:
    """A rich-text array with its inline annotations as markdown."""
    if not isinstance(rich, list):
        return ""
    out: list[str] = []
    for r in rich:
        if not isinstance(r, Mapping):
            continue
        text = str(r.get("plain_text") or (r.get("text") or {}).get("content") or "")
        if not text:
            continue
        ann = r.get("annotations") or {}
        if ann.get("code"):
            text = f"`{text}`"
        if ann.get("bold"):
            text = f"**{text}**"
        if ann.get("italic"):
            text = f"*{text}*"
        if ann.get("strikethrough"):
            text = f"~~{text}~~"
        href = r.get("href") or ((r.get("text") or {}).get("link") or {}).get("url")
        if href:
            text = f"[{text}]({href})"
        out.append(text)
    return "".join(out)


def page_url(page_id: str) -> str:
    """Notion's public link of a page id."""
    return f"https://www.notion.so/{page_id.replace('-', '')}"


def _file_url(value: Mapping[str, Any]) -> str | None:
    kind = value.get("type")
    inner = value.get(str(kind)) if kind else None
    url = inner.get("url") if isinstance(inner, Mapping) else None
    return str(url) if url else None


def block_markdown(block: Mapping[str, Any]) -> str | None:
    """One block (without its children) as markdown, or None when it renders nothing."""
    kind = str(block.get("type") or "")
    value: Mapping[str, Any] = block.get(kind) or {}
    text = rich_markdown(value.get("rich_text"))
    if kind == "paragraph":
        return text or None
    if kind in ("heading_1", "heading_2", "heading_3"):
        return "#" * int(kind[-1]) + " " + text
    if kind == "bulleted_list_item":
        return f"- {text}"
    if kind == "numbered_list_item":
        return f"1. {text}"
    if kind == "to_do":
        return f"- [{'x' if value.get('checked') else ' '}] {text}"
    if kind == "toggle":
        return f"<details><summary>{text}</summary></details>"
    if kind == "code":
        return f"```{value.get('language') or ''}\n{plain_text(value.get('rich_text'))}\n```"
    if kind == "quote":
        return f"> {text}"
    if kind == "callout":
        icon = value.get("icon") or {}
        emoji = icon.get("emoji") if isinstance(icon, Mapping) else None
        return f"> {emoji + ' ' if emoji else ''}{text}"
    if kind == "divider":
        return "---"
    if kind == "table":
        return "[Table]"
    if kind == "image":
        url = _file_url(value)
        return f"![{plain_text(value.get('caption'))}]({url})" if url else "[Image]"
    if kind == "bookmark":
        url = value.get("url")
        return f"[{plain_text(value.get('caption')) or url}]({url})" if url else None
    if kind == "embed":
        return f"[Embed: {value.get('url')}]" if value.get("url") else None
    if kind == "child_page":
        return f"**[{value.get('title') or 'Untitled'}]({page_url(str(block.get('id') or ''))})**"
    if kind == "child_database":
        return f"**[Database: {value.get('title') or 'Untitled'}]**"
    if kind == "equation":
        return f"$${value.get('expression') or ''}$$"
    if kind == "table_of_contents":
        return "[Table of Contents]"
    return None


def blocks_markdown(blocks: Iterable[Mapping[str, Any]], indent: str = "") -> str:
    """Blocks (with nested ``children`` as the client fetched them) as one markdown document."""
    parts: list[str] = []
    for block in blocks:
        own = block_markdown(block)
        kids = block.get("children") or []
        nested = blocks_markdown(kids, indent + "  ") if kids else ""
        if own is not None and block.get("type") == "toggle" and nested:
            own = own.replace("</summary></details>", "</summary>\n\n" + nested + "\n\n</details>")
            nested = ""
        if own is not None:
            parts.append(indent + own.replace("\n", "\n" + indent) if indent else own)
        if nested:
            parts.append(nested)
    return "\n\n".join(p for p in parts if p.strip())
