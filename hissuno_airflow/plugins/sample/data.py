"""The sample "provider": seeded, realistic support data that appears over time and can be changed.

Record ``i`` of a workspace becomes visible at ``epoch + i * every_seconds``. ``touch`` simulates
edits on the provider side: it bumps a record's revision and its update time, kept in
``$HISSUNO_HOME/sample/<workspace>.json`` so every process (CLI, Airflow task) sees the same source.
``delete`` removes conversations the way many APIs do: they leave the listing and show up in a feed of
tombstones (``deleted_conversations``) stamped with the deletion time; ``touch`` brings one back.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

COMPANIES = [
    ("Acme Robotics", "acme-robotics.com", "Manufacturing"), ("Northwind Foods", "northwind.io", "Retail"),
    ("Globex Logistics", "globex.co", "Logistics"), ("Initech Software", "initech.dev", "Software"),
    ("Umbrella Health", "umbrella-health.org", "Healthcare"), ("Stark Energy", "starkenergy.com", "Energy"),
    ("Wayne Analytics", "wayneanalytics.ai", "Analytics"), ("Hooli Cloud", "hooli.cloud", "Software"),
    ("Soylent Labs", "soylentlabs.com", "Food tech"), ("Vandelay Imports", "vandelay.net", "Wholesale"),
    ("Pied Piper", "piedpiper.com", "Software"), ("Cyberdyne Systems", "cyberdyne.tech", "Hardware"),
]
FIRST = ["Maya", "Liam", "Ava", "Noah", "Zoe", "Ethan", "Priya", "Mateo", "Hana", "Omar", "Lena", "Kofi",
         "Sofia", "Arjun", "Chloe", "Yuki", "Diego", "Amara", "Felix", "Ines"]
LAST = ["Patel", "Nguyen", "Garcia", "Smith", "Kim", "Okafor", "Rossi", "Muller", "Silva", "Cohen",
        "Haddad", "Larsen", "Tanaka", "Dubois", "Novak", "Mensah"]
AGENTS = ["Sam (Support)", "Riley (Support)", "Jordan (Success)"]

THEMES: list[dict[str, Any]] = [
    {"title": "CSV export fails with a 500 error", "type": "bug", "user": [
        "Hi, exporting our dashboard to CSV fails with a 500 error since this morning.",
        "It happens for every report with more than 10k rows. Smaller exports work.",
        "We rely on this export for our weekly board report, so it is urgent for us.",
        "Yes, the error started right after the update on Tuesday.",
        "Thanks, the workaround with filtered exports works for now."], "agent": [
        "Thanks for reporting this! Could you tell me which report and roughly how many rows?",
        "I can reproduce the crash on large exports. I've filed it with engineering.",
        "Understood. As a workaround you can export in filtered chunks by date range.",
        "Engineering confirmed a regression in the export service; a fix ships this week.",
        "Great, I'll update this conversation as soon as the fix is live."]},
    {"title": "Request: Slack notifications for new feedback", "type": "feature_request", "user": [
        "Would be great if we could get Slack notifications whenever new feedback arrives.",
        "Ideally per channel, so the mobile team only sees mobile feedback.",
        "Is there a way to filter by tag as well? Please add that if possible.",
        "Email digests are too slow for us, we want to react within minutes.",
        "Perfect, thanks for passing it on to the product team!"], "agent": [
        "That's a great idea. Today we only support daily email digests.",
        "Per-channel routing makes sense. I'm adding your use case to the feature request.",
        "Tag filters are on our roadmap for next quarter.",
        "Noted, real-time matters. I'll share this with the product manager.",
        "You're welcome! We'll let you know when it's in beta."]},
    {"title": "Login loop after enabling SSO", "type": "bug", "user": [
        "After enabling SSO with Okta, our users get stuck in a login loop.",
        "It redirects back to the login page every time, it doesn't work at all.",
        "We tried clearing cookies but the error persists in Chrome and Firefox.",
        "Our IdP logs show a successful assertion, so the failure is on your side.",
        "Confirmed, after fixing the ACS URL everything works. Thank you!"], "agent": [
        "Sorry about that! Could you share your SSO configuration (without secrets)?",
        "It looks like the ACS URL still points to the old domain.",
        "Could you update the ACS URL in Okta to the one shown in settings?",
        "Thanks, I see the assertion now. The mismatch is the trailing slash.",
        "Glad it works! I'll ask the team to make that error message clearer."]},
    {"title": "Renewal and expansion to two more teams", "type": None, "user": [
        "We love the product, the insights saved us hours every week.",
        "We're planning to renew and expand to two more teams next quarter.",
        "Could you send a quote for 40 additional seats?",
        "Also, amazing job on the new search, the team is thrilled.",
        "Great, looking forward to the call."], "agent": [
        "That's wonderful to hear, thank you!",
        "Fantastic news. I'll loop in your account manager.",
        "Of course, the quote will reach you by Friday.",
        "Thank you, I'll pass it on to the search team.",
        "Talk soon!"]},
    {"title": "Considering cancelling: too expensive", "type": None, "user": [
        "We're considering cancelling our subscription, it has become too expensive for us.",
        "A competitor offers a similar plan for half the price.",
        "We mostly use the tagging and the weekly reports, nothing else.",
        "A downgrade could work if we keep the reports.",
        "OK, please send the details of the smaller plan."], "agent": [
        "I'm sorry to hear that. Could you tell me which features matter most to you?",
        "I understand. Let me check what we can offer.",
        "The Starter plan includes tagging and weekly reports.",
        "That's possible; the downgrade keeps all your history.",
        "Sent! Let me know if you have any questions."]},
    {"title": "Rename 'Projects' to 'Workspaces' in the sidebar", "type": "change_request", "user": [
        "The word 'Projects' in the sidebar is confusing for our users.",
        "It should be 'Workspaces', since that's what we call them everywhere else.",
        "Also the settings page is hard to find, could you move the link to the top?",
        "It's a small change but it would reduce a lot of support questions internally.",
        "Thanks for considering it."], "agent": [
        "Thanks for the feedback on the naming.",
        "That makes sense; several customers mentioned the same.",
        "I'll include the settings link placement in the change request.",
        "Agreed, small UI changes like this make a big difference.",
        "Thank you for taking the time to write this up!"]},
]

ARTICLES = {
    "help-center": [
        ("Exporting reports", "## Exporting\n\nUse **Export > CSV** on any dashboard.\n\n### Large exports\n\n"
         "Exports with more than 10,000 rows are processed in the background and emailed to you.\n\n"
         "### Troubleshooting\n\nIf an export fails, filter by date range and export in chunks."),
        ("Setting up SSO", "## Single sign-on\n\nWe support SAML 2.0 with Okta, Azure AD and Google.\n\n"
         "### ACS URL\n\nThe ACS URL must match exactly, including the trailing slash.\n\n"
         "### Login loops\n\nA login loop almost always means the ACS URL or entity id does not match."),
        ("Notifications", "## Notifications\n\nDaily email digests summarise new feedback.\n\n"
         "### Slack\n\nSlack notifications are in beta; ask support to enable them."),
    ],
    "handbook": [
        ("Support tone guide", "# Tone\n\nBe warm, concise and specific.\n\n## Apologies\n\n"
         "Apologise once, then focus on the fix.\n\n## Escalations\n\nEscalate bugs with a reproduction."),
        ("Plans and pricing", "# Plans\n\n## Starter\n\nTagging and weekly reports.\n\n## Business\n\n"
         "Everything in Starter plus SSO, API access and Slack notifications."),
    ],
}


@dataclass(frozen=True)
class SampleSource:
    """Parameters of one sample workspace."""

    workspace: str
    epoch: datetime
    every_seconds: int = 3600


def _state_path(workspace: str) -> Path:
    base = Path(os.environ.get("HISSUNO_HOME") or Path.home() / ".hissuno").expanduser() / "sample"
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{workspace}.json"


def load_revisions(workspace: str) -> dict[str, dict[str, Any]]:
    """external id -> {revision, updated_at} of edited records."""
    path = _state_path(workspace)
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text() or "{}")
    return data


def touch(workspace: str, external_ids: list[str], when: datetime | None = None) -> None:
    """Simulate provider-side edits: bump revision and update time of each record (restoring a deleted one)."""
    _edit(workspace, external_ids, when, deleted=False)


def delete(workspace: str, external_ids: list[str], when: datetime | None = None) -> None:
    """Simulate provider-side deletions: the records leave the listings and become tombstones at ``when``."""
    _edit(workspace, external_ids, when, deleted=True)


def _edit(workspace: str, external_ids: list[str], when: datetime | None, *, deleted: bool) -> None:
    path = _state_path(workspace)
    when = when or datetime.now(UTC)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load_revisions(workspace)
        for ext in external_ids:
            entry = state.setdefault(ext, {"revision": 0})
            if deleted:
                entry["deleted"] = True
            else:
                entry["revision"] += 1
                entry.pop("deleted", None)
            entry["updated_at"] = when.isoformat()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)


def _person(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    if i % 7 == 3:
        return {"name": f"{first} {last}", "email": f"{first}.{last}{i % 5}@gmail.com".lower(), "company": None}
    name, domain, industry = COMPANIES[rng.randrange(len(COMPANIES))]
    return {"name": f"{first} {last}", "email": f"{first}.{last}@{domain}".lower(),
            "company": {"name": name, "domain": domain, "industry": industry}}


def _draws(src: SampleSource, i: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Conversation ``i``'s person, theme and number of exchanges (fixed by the workspace and ``i``)."""
    rng = random.Random(f"{src.workspace}:{i}")
    person = _person(rng, i)
    theme = THEMES[rng.randrange(len(THEMES))]
    return person, theme, rng.randint(2, 5)


def _listed(ts: datetime, since: datetime | None, until: datetime | None, now: datetime) -> bool:
    """Whether a change at ``ts`` is in the listing's window ``[since, until)`` and not in the future."""
    return (since is None or ts >= since) and (until is None or ts < until) and ts <= now


def _unedited_update(created: datetime, n: int) -> datetime:
    """An unedited conversation's update time: its last agent reply, 14 to 44 minutes after its creation."""
    return created + timedelta(minutes=10 * (n - 1) + 4)


def conversation(src: SampleSource, i: int, revisions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Conversation ``i`` as the provider would return it."""
    ext = f"conv-{i}"
    rev = revisions.get(ext, {})
    revision = int(rev.get("revision", 0))
    person, theme, n = _draws(src, i)
    created = src.epoch + timedelta(seconds=i * src.every_seconds)
    messages = []
    for k in range(n):
        messages.append({"from": "customer", "author": person["name"], "body": theme["user"][k],
                         "at": (created + timedelta(minutes=10 * k)).isoformat()})
        messages.append({"from": "agent", "author": AGENTS[i % len(AGENTS)], "body": theme["agent"][k],
                         "at": (created + timedelta(minutes=10 * k + 4)).isoformat()})
    for r in range(revision):
        messages.append({"from": "customer", "author": person["name"],
                         "body": f"Follow-up #{r + 1}: any update on this?",
                         "at": rev.get("updated_at", created.isoformat())})
    updated = datetime.fromisoformat(rev["updated_at"]) if "updated_at" in rev else _unedited_update(created, n)
    return {"id": ext, "subject": theme["title"], "theme_type": theme["type"], "customer": person,
            "messages": messages, "created_at": created.isoformat(), "updated_at": updated.isoformat(),
            "status": "closed", "revision": revision}


def conversations(src: SampleSource, *, size: int, since: datetime | None, until: datetime | None,
                  now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Visible conversations updated in ``[since, until)``, oldest update first (as an API would page),
    made one at a time: a listing of 100,000 is never held whole.

    Edited conversations (few: those in the workspace's revisions file) are sorted up front. The others
    come in creation order and each is updated after its creation (``_unedited_update``), so once
    conversation ``i`` is created none updated before that moment can still come: a heap of those created
    in the last 44 minutes puts them in update order."""
    now = now or datetime.now(UTC)
    revisions = load_revisions(src.workspace)

    def key(conv: dict[str, Any]) -> tuple[str, str]:
        return conv["updated_at"], conv["id"]

    def created_at(i: int) -> datetime:
        return src.epoch + timedelta(seconds=i * src.every_seconds)

    edited = sorted((conversation(src, i, revisions) for i in _edited(revisions, size)
                     if created_at(i) <= now), key=key)

    def unedited() -> Iterator[dict[str, Any]]:
        window: list[tuple[tuple[str, str], dict[str, Any]]] = []
        for i in range(size):
            created = created_at(i)
            if created > now:
                break
            while window and window[0][1]["updated_at"] < created.isoformat():
                yield heapq.heappop(window)[1]
            rev = revisions.get(f"conv-{i}", {})
            if rev.get("deleted") or "updated_at" in rev:  # deleted, or edited (sorted above)
                continue
            conv = conversation(src, i, revisions)
            heapq.heappush(window, (key(conv), conv))
        while window:
            yield heapq.heappop(window)[1]

    for conv in heapq.merge(unedited(), edited, key=key):
        ts = datetime.fromisoformat(conv["updated_at"])
        if _listed(ts, since, until, now):
            yield conv


def count_conversations(src: SampleSource, *, size: int, since: datetime | None, until: datetime | None,
                        now: datetime | None = None) -> int:
    """How many conversations ``conversations`` lists, counted without making them (a listing's total)."""
    now = now or datetime.now(UTC)
    revisions = load_revisions(src.workspace)
    n = 0
    for i in range(size):
        created = src.epoch + timedelta(seconds=i * src.every_seconds)
        if created > now:
            break
        rev = revisions.get(f"conv-{i}", {})
        if rev.get("deleted"):
            continue
        ts = datetime.fromisoformat(rev["updated_at"]) if "updated_at" in rev else \
            _unedited_update(created, _draws(src, i)[2])
        n += _listed(ts, since, until, now)
    return n


def _edited(revisions: dict[str, dict[str, Any]], size: int) -> list[int]:
    """Indexes below ``size`` of the conversations edited and not deleted."""
    out = []
    for ext, rev in revisions.items():
        if ext.startswith("conv-") and ext[5:].isdigit() and int(ext[5:]) < size and not rev.get("deleted") \
                and "updated_at" in rev:
            out.append(int(ext[5:]))
    return out


def deleted_conversations(src: SampleSource, *, size: int, since: datetime | None, until: datetime | None,
                          now: datetime | None = None) -> list[dict[str, Any]]:
    """Tombstones ``{"id", "deleted_at"}`` of conversations deleted in ``[since, until)``, oldest first."""
    now = now or datetime.now(UTC)
    out = []
    for ext, rev in load_revisions(src.workspace).items():
        if not rev.get("deleted") or not ext.startswith("conv-") or not int(ext[5:]) < size:
            continue
        ts = datetime.fromisoformat(rev["updated_at"])
        if _listed(ts, since, until, now):
            out.append({"id": ext, "deleted_at": rev["updated_at"]})
    out.sort(key=lambda t: (t["deleted_at"], t["id"]))
    return out


def articles(space: str, epoch: datetime, revisions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Help articles of one space."""
    out = []
    for k, (title, body) in enumerate(ARTICLES.get(space, [])):
        ext = f"{space}/{k}"
        rev = revisions.get(ext, {})
        extra = "".join(f"\n\n## Update {r + 1}\n\nRevised guidance." for r in range(int(rev.get("revision", 0))))
        updated = rev.get("updated_at") or (epoch + timedelta(hours=k)).isoformat()
        out.append({"id": ext, "title": title, "body": body + extra, "updated_at": updated,
                    "url": f"https://help.example.com/{space}/{k}"})
    return out
