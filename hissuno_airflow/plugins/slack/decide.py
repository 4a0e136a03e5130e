"""Whether the bot answers a message in a thread it takes part in: the reference's rules, in order.

0. the thread was taken over by a person (an earlier human message said a takeover phrase) -> skip;
1. the message mentions the bot -> respond;
2. it mentions another user -> skip (it is addressed to them);
3. it contains a takeover phrase -> skip, and the thread is taken over from now on;
4. the bot wrote the message just before it (the bot is the last responder) -> respond;
5. otherwise the classifier decides (an error or no model configured -> respond).

The thread's own history is the state (no side table): what the reference kept as ``last_responder_type``
and ``is_human_takeover`` is read from the messages ``conversations.replies`` returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TAKEOVER_PHRASES = (
    "i'll handle this", "i will handle this", "let me take over", "taking over", "human here",
    "thanks hissuno", "thank you hissuno", "got it from here", "i've got this", "i got this",
    "i'll take it from here", "i'll take this", "let me handle", "i'll take over", "handing off",
    "i'll answer", "i'll respond", "i'll follow up", "leave this to me", "stop responding",
)
"""Case-insensitive phrases by which a person takes a thread over from the bot (20, as the reference)."""

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def mentions(text: str) -> set[str]:
    """User ids mentioned as ``<@U123>`` (or ``<@U123|name>``)."""
    return set(_MENTION.findall(text or ""))


def has_takeover_phrase(text: str) -> bool:
    """Whether ``text`` says a person takes over (curly apostrophes count as straight ones)."""
    low = (text or "").lower().replace("\u2019", "'")
    return any(p in low for p in TAKEOVER_PHRASES)


def is_bot(message: Mapping[str, Any], bot_user_id: str) -> bool:
    """Written by this app's bot (or any bot)."""
    return bool(message.get("bot_id")) or message.get("subtype") == "bot_message" or (
        bool(bot_user_id) and message.get("user") == bot_user_id)


def taken_over(earlier: Sequence[Mapping[str, Any]], bot_user_id: str) -> bool:
    """An earlier human message of the thread said a takeover phrase."""
    return any(not is_bot(m, bot_user_id) and has_takeover_phrase(str(m.get("text") or "")) for m in earlier)


def bot_took_part(thread: Sequence[Mapping[str, Any]], bot_user_id: str) -> bool:
    """The bot wrote in the thread or was mentioned in it: the thread is tracked."""
    return any(is_bot(m, bot_user_id) or bot_user_id in mentions(str(m.get("text") or "")) for m in thread)


@dataclass(frozen=True)
class Decision:
    """The outcome and the rule that made it."""

    respond: bool
    reason: str
    """``human_takeover``, ``mention``, ``other_user_mention``, ``takeover_phrase``, ``last_responder``,
    ``classifier``."""


def decide(text: str, earlier: Sequence[Mapping[str, Any]], bot_user_id: str,
           classify: Callable[[], bool]) -> Decision:
    """Apply the rules to a message ``text`` given the thread's ``earlier`` messages (oldest first)."""
    if taken_over(earlier, bot_user_id):
        return Decision(False, "human_takeover")
    mentioned = mentions(text)
    if bot_user_id in mentioned:
        return Decision(True, "mention")
    if mentioned:
        return Decision(False, "other_user_mention")
    if has_takeover_phrase(text):
        return Decision(False, "takeover_phrase")
    if earlier and is_bot(earlier[-1], bot_user_id):
        return Decision(True, "last_responder")
    return Decision(classify(), "classifier")
