"""The rule classifier tries a rule only when one of its anchor words occurs: the same tags as trying every
rule, for every phrase each rule accepts."""

from __future__ import annotations

import itertools
import re
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from hissuno_airflow.store.classify import RULES, anchors, classify_rules, matcher


def _expand(items: Any) -> list[str]:
    """Every string a parsed (finite, repetition-free but for ``?``) pattern accepts."""
    out = [""]
    for op, arg in items:
        if op is sre_c.LITERAL:
            options = [chr(arg)]
        elif op is sre_c.AT:  # \b: no characters
            continue
        elif op is sre_c.SUBPATTERN:
            options = _expand(arg[-1])
        elif op is sre_c.BRANCH:
            options = [s for branch in arg[1] for s in _expand(branch)]
        elif op is sre_c.IN:
            options = [chr(v) for kind, v in arg if kind is sre_c.LITERAL]
        elif op is sre_c.MAX_REPEAT and arg[0] == 0 and arg[1] == 1:
            options = ["", *_expand(arg[2])]
        else:
            raise AssertionError(f"unexpected pattern element {op}")
        out = [a + b for a, b in itertools.product(out, options)]
    return out


def _every_rule(text: str) -> list[str]:
    lowered = text.lower()
    return [tag for tag, pat in RULES.items() if re.search(pat.pattern, lowered)] or ["general_feedback"]


def test_every_phrase_of_every_rule_is_tagged_as_trying_every_rule_would():
    phrases = {tag: _expand(sre_parse.parse(pat.pattern)) for tag, pat in RULES.items()}
    assert "fail" in phrases["bug"] and "cant login" in phrases["bug"] and "cancelled" in phrases["losses"]
    checked = 0
    for tag, accepted in phrases.items():
        for phrase in accepted:
            # Inside a word (a letter, an underscore, a digit or a non-ASCII letter before it), and inside a
            # word first and on its own later: the boundary is checked at each match, and the search goes on.
            for text in (phrase, f"Hello team, {phrase.upper()} since Monday.", f"x{phrase}", f"_{phrase}",
                         f"9{phrase}", f"é{phrase}", f"x{phrase} {phrase}", f"x{phrase}_{phrase}"):
                assert classify_rules([("user", text)]) == _every_rule(text), (tag, text)
                checked += 1
    assert checked >= 500  # 67 phrases, eight texts each


def test_conversations_without_any_rule_word_are_general_feedback():
    convo = [("user", "How do I configure the weekly digest for my team?"), ("human_agent", "Settings > Digest.")]
    assert classify_rules(convo) == ["general_feedback"]


def test_a_rule_whose_alternative_starts_with_syntax_is_always_tried():
    assert anchors(r"\b(\d+ errors|bug)\b") is None
    assert anchors(r"\b(a\(b|c)\b") is None  # an escape: "c" alone matches, which a naive split would miss
    assert anchors(r"\b(bug|error)s\b") is None  # not one group between the boundaries
    assert anchors(r"\b(bug)|(error)\b") is None  # nor is this
    assert anchors(r"\b(fails?|stack ?trace|would be (great|nice))\b") == ("fail", "stack", "would be ")


def test_a_pattern_whose_alternative_starts_with_a_non_word_character_keeps_its_boundary():
    # ``\b`` before "-" holds after a word character, not after a space: the search keeps the pattern whole.
    for pattern in (r"\b(-x|yes)\b", r"\b(bug|\d+ errors)\b"):
        for text in ("a -x", "a-x", "-x", "yes", "ayes", "3 errors", "a3 errors", "bug"):
            assert matcher(pattern)(text) == (re.search(pattern, text) is not None), (pattern, text)
