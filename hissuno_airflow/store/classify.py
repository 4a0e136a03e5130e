"""Session classification into the original's tags, rule-based by default, optionally by an LLM.

Rules are transparent: each tag has word patterns matched against the customer's (``user``)
messages, falling back to the whole conversation; ``general_feedback`` when nothing else matches.
``HISSUNO_CLASSIFIER=llm`` asks an OpenAI-compatible chat endpoint (``HISSUNO_LLM_BASE_URL``,
``HISSUNO_LLM_API_KEY``, ``HISSUNO_LLM_MODEL``) and falls back to the rules on any failure.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence

from ..kit.types import SESSION_TAGS

log = logging.getLogger(__name__)

RULES: dict[str, re.Pattern[str]] = {
    "bug": re.compile(
        r"\b(bug|error|crash(es|ed)?|broken|fails?|failing|exception|doesn'?t work|not working|500|"
        r"stack ?trace|regression|timeout|can'?t log ?in)\b", re.I),
    "feature_request": re.compile(
        r"\b(feature request|would be (great|nice)|please add|wish|could you add|support for|"
        r"it would help|roadmap|is there a way to)\b", re.I),
    "change_request": re.compile(
        r"\b(change the|instead of|rename|move the|should be|update the (default|wording)|"
        r"confusing|hard to find)\b", re.I),
    "wins": re.compile(
        r"\b(love|amazing|great job|thank you so much|fantastic|renew(ed|ing)?|upgrade[ds]?|"
        r"expand(ing)?|saved us)\b", re.I),
    "losses": re.compile(
        r"\b(cancel(l?ing|led)?|churn|switch(ing)? to|downgrade|too expensive|refund|"
        r"moving away|competitor)\b", re.I),
}


_QUANTIFIERS = "?*+{"


def anchors(pattern: str) -> tuple[str, ...] | None:
    """Literal text every match of ``pattern`` (``\\b(a|b|...)\\b``) contains: each alternative's leading
    literal characters (up to its first regex syntax, without a character a quantifier makes optional).
    None when some alternative starts with syntax, or the pattern is not of that shape or escapes a character
    (this splitter does not read escapes), so nothing can be skipped safely."""
    inner = pattern.removeprefix(r"\b(").removesuffix(r")\b")
    if len(inner) != len(pattern) - 6 or "\\" in inner:
        return None
    alternatives, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:  # ``\b(a)|(b)\b``: the outer parentheses are not one group
                return None
        elif ch == "|" and depth == 0:
            alternatives.append(inner[start:i])
            start = i + 1
    alternatives.append(inner[start:])
    found = []
    for alt in alternatives:
        end = next((i for i, ch in enumerate(alt) if ch in "()[]{}|\\.^$*+?"), len(alt))
        literal = alt[:end - 1] if end < len(alt) and alt[end] in _QUANTIFIERS else alt[:end]
        if not literal:
            return None
        found.append(literal)
    return tuple(dict.fromkeys(found))


def _is_word(ch: str) -> bool:
    """Whether ``ch`` is a character ``\\w`` matches in a str pattern (what ``\\b`` tells apart)."""
    return ch.isalnum() or ch == "_"


def matcher(pattern: str) -> Callable[[str], bool]:
    """Whether ``pattern`` occurs in a text, the way ``re.compile(pattern).search`` says, faster.

    A rule is tried only when one of its anchors (``anchors``) occurs in the text: a rule that does not match
    scans the whole conversation (11 us for 760 characters; most conversations match few of the five
    rules), where looking for its few literal words costs about one. And a rule whose alternatives all start
    with a word character is searched without its leading ``\\b``, checked at the match instead: a pattern
    that starts with an alternation of literals lets the regex engine skip positions no alternative starts
    with, which a leading ``\\b`` prevents (1 to 7 us less a rule). At a position where the boundary
    holds both attempts are the same; where it does not, the search goes on from the next position."""
    full = re.compile(pattern)
    words = anchors(pattern)
    if words is None:
        return lambda text: full.search(text) is not None
    rest = re.compile(pattern[2:]) if all(_is_word(w[0]) for w in words) else None

    def matches(text: str) -> bool:
        if not any(w in text for w in words):
            return False
        if rest is None:
            return full.search(text) is not None
        found = rest.search(text)
        while found is not None:
            at = found.start()
            if at == 0 or not _is_word(text[at - 1]):
                return True
            found = rest.search(text, at + 1)
        return False

    return matches


# The rules matched against lower-cased text: the same matches as ``re.I`` (every pattern is lower case)
# at under half the cost. Measured per conversation (rules and matcher together): 57 -> 12 us for one that
# matches no rule, 25 -> 13 us for bench/ingest.py's, which match four.
_LOWER_RULES = [(tag, matcher(pat.pattern)) for tag, pat in RULES.items()]


def classify_rules(messages: Sequence[tuple[str, str]]) -> list[str]:
    """Tags for a conversation given (sender_type, content) pairs."""
    user_text = "\n".join(c for s, c in messages if s == "user")
    text = (user_text or "\n".join(c for _, c in messages)).lower()
    tags = [tag for tag, matches in _LOWER_RULES if matches(text)]
    return tags or ["general_feedback"]


def classify_llm(messages: Sequence[tuple[str, str]]) -> list[str]:
    """Ask an OpenAI-compatible chat endpoint; rules on any failure."""
    import httpx

    base = os.environ.get("HISSUNO_LLM_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    key = os.environ.get("HISSUNO_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY", "")
    convo = "\n".join(f"{s}: {c}" for s, c in messages[:30])[:6000]
    prompt = (
        "Classify this customer conversation. Answer with a JSON list using only these tags: "
        + ", ".join(SESSION_TAGS) + ".\n\n" + convo
    )
    try:
        resp = httpx.post(
            f"{base}/chat/completions", timeout=30.0, headers={"Authorization": f"Bearer {key}"},
            json={"model": os.environ.get("HISSUNO_LLM_MODEL", "gpt-4o-mini"),
                  "messages": [{"role": "user", "content": prompt}], "temperature": 0},
        )
        resp.raise_for_status()
        content = resp.json()["choices"][0]["message"]["content"]
        match = re.search(r"\[.*?\]", content, re.S)
        tags = [t for t in json.loads(match.group(0) if match else content) if t in SESSION_TAGS]
        return tags or ["general_feedback"]
    except Exception as exc:  # classification must never fail an ingest; say why it fell back
        log.warning("LLM classifier unavailable (%s); using the rules", type(exc).__name__)
        return classify_rules(messages)


def classifier() -> Callable[[Sequence[tuple[str, str]]], list[str]]:
    """The configured classifier (``HISSUNO_CLASSIFIER``), for a caller that classifies many conversations
    (reading the variable was a tenth of classifying one by the rules)."""
    return classify_llm if os.environ.get("HISSUNO_CLASSIFIER", "rules").lower() == "llm" else classify_rules
