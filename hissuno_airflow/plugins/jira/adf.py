"""Atlassian Document Format (Jira v3 rich text) as plain text.

The reference stored a description only when it was a string, and API v3 returns ADF objects, so
every description was empty. Block nodes end in a line break, list items get a marker, a mention
or an emoji keeps its text, an unknown node keeps the text of its children: no words are lost.
"""

from __future__ import annotations

from typing import Any

_BLOCKS = frozenset({"paragraph", "heading", "blockquote", "codeBlock", "rule", "panel", "table", "tableRow",
                     "mediaGroup", "mediaSingle", "expand", "nestedExpand", "decisionList", "taskList"})


def adf_to_text(node: Any) -> str:
    """The text of an ADF document (or of a plain string, returned as it is), blank lines collapsed."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.strip()
    lines = "".join(_render(node, "")).splitlines()
    out: list[str] = []
    for line in (ln.rstrip() for ln in lines):
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _children(node: dict[str, Any], indent: str) -> list[str]:
    content = node.get("content")
    return [part for child in content for part in _render(child, indent)] if isinstance(content, list) else []


def _render(node: Any, indent: str) -> list[str]:
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    raw_attrs = node.get("attrs")
    attrs: dict[str, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
    if kind == "text":
        return [str(node.get("text") or "")]
    if kind == "hardBreak":
        return ["\n" + indent]
    if kind == "mention":
        return [str(attrs.get("text") or "@" + str(attrs.get("id") or "someone"))]
    if kind == "emoji":
        return [str(attrs.get("text") or attrs.get("shortName") or "")]
    if kind in ("inlineCard", "blockCard", "embedCard"):
        return [str(attrs.get("url") or "")] + (["\n"] if kind != "inlineCard" else [])
    if kind == "date":
        return [str(attrs.get("timestamp") or "")]
    if kind == "status":
        return [str(attrs.get("text") or "")]
    if kind in ("bulletList", "orderedList"):
        out: list[str] = []
        start = int(attrs.get("order") or 1) if kind == "orderedList" else 1
        for i, item in enumerate(node.get("content") or []):
            marker = f"{start + i}. " if kind == "orderedList" else "- "
            out += [indent + marker, *(_children(item, indent + "  ") if isinstance(item, dict) else [])]
            if not out[-1].endswith("\n"):
                out.append("\n")
        return out
    if kind == "taskItem":
        return [indent + ("[x] " if attrs.get("state") == "DONE" else "[ ] "), *_children(node, indent), "\n"]
    if kind == "tableCell" or kind == "tableHeader":
        return [*(p.replace("\n", " ") for p in _children(node, "")), " | "]
    if kind == "rule":
        return ["\n---\n"]
    inner = _children(node, indent)
    if kind in _BLOCKS:
        return [*inner, "\n"]
    return inner
