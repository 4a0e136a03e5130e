"""Repository content as knowledge: which files are read (globs, size, text only), how a file becomes a
knowledge record, and which records a new tree replaces.

One knowledge source per repository (external id ``owner/repo``, type ``codebase``) is updated in place:
its content is the file index at the synced commit. Each text file is a child source whose external id
carries its blob SHA (``owner/repo:path@sha``): an unchanged file keeps its id, so it is neither fetched
nor embedded again; a changed file gets a new id (fetched, chunked, embedded) and the old one is deleted,
as is a file that left the tree or the globs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

MAX_FILE_BYTES = 200_000
"""Larger files (bundles, fixtures, generated code) are not knowledge worth embedding."""
MAX_ID_LENGTH = 512
"""An external id's limit in the store."""
BINARY_SUFFIXES = frozenset({
    "png", "jpg", "jpeg", "gif", "bmp", "ico", "webp", "svgz", "pdf", "zip", "gz", "tgz", "bz2", "xz", "7z",
    "tar", "jar", "war", "class", "so", "dylib", "dll", "exe", "bin", "o", "a", "pyc", "woff", "woff2", "ttf",
    "otf", "eot", "mp3", "mp4", "mov", "avi", "wav", "ogg", "webm", "psd", "sketch", "db", "sqlite", "lock",
})


@lru_cache(maxsize=256)
def _glob_re(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**`` spans directories, ``*`` and ``?`` stay inside one."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, globs: Iterable[str]) -> bool:
    """Whether ``path`` matches any glob (a glob without ``/`` also matches the file name anywhere)."""
    name = path.rsplit("/", 1)[-1]
    for glob in globs:
        glob = glob.strip().lstrip("/")
        if glob and (_glob_re(glob).match(path) or ("/" not in glob and _glob_re(glob).match(name))):
            return True
    return False


def wanted(entry: dict[str, Any], include: Sequence[str], exclude: Sequence[str]) -> str | None:
    """Why a tree entry is left out (None: it is read)."""
    path = str(entry.get("path") or "")
    if entry.get("type") != "blob":
        return "not a file"
    if include and not matches(path, include):
        return "outside includeGlobs"
    if exclude and matches(path, exclude):
        return "matched excludeGlobs"
    if path.rsplit(".", 1)[-1].lower() in BINARY_SUFFIXES and "." in path.rsplit("/", 1)[-1]:
        return "binary file type"
    if int(entry.get("size") or 0) > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    return None


def file_id(repo: str, path: str, sha: str) -> str:
    """External id of one file version."""
    return f"{repo}:{path}@{sha}"


def decode_text(data: bytes) -> str | None:
    """The file as text, or None when it is binary (a NUL byte, or not UTF-8)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def file_markdown(path: str, text: str) -> str:
    """A file as markdown: its path as the heading; code fenced so its own ``#`` lines are not headings.

    Markdown files are kept as they are (their headings structure the chunks)."""
    if path.lower().endswith((".md", ".markdown", ".mdx")):
        return f"# {path}\n\n{text.strip()}\n"
    lang = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    fence = "````" if "```" in text else "```"
    return f"# {path}\n\n{fence}{lang}\n{text.rstrip()}\n{fence}\n"


def index_markdown(repo: str, branch: str, commit: str, paths: Sequence[str]) -> str:
    """The repository's own knowledge source: what was synced, from where."""
    listing = "\n".join(f"- {p}" for p in paths) or "(no files matched)"
    return f"# {repo}\n\nBranch `{branch}` at commit `{commit}`; {len(paths)} files.\n\n## Files\n\n{listing}\n"
