"""PostHog persons and events as hissuno records: the reference's behavioural metrics (hissuno-reference.md
5.11) and the analytics knowledge documents.

Engagement score 0-100 = weighted event count / 200, weights 3 (last 7 days), 2 (8-14), 1 (older);
trend = the last 15 days against the 15 before (growing when the earlier half is empty and the recent
one is not, otherwise a +-15% threshold); feature usage = event counts per mapped feature; signals =
matching events with count, last time and last page, newest first. Every value is computed relative to
the window's end, not the wall clock, so an unchanged person yields the same record and writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENERIC_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com", "icloud.com",
    "me.com", "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "mail.com", "yandex.ru",
})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

BEHAVIORAL_QUERY = """
SELECT person_id, event, count() AS total,
       countIf(timestamp >= toDateTime({{d7}}, 'UTC')) AS last_7d,
       countIf(timestamp >= toDateTime({{d14}}, 'UTC')) AS last_14d,
       countIf(timestamp >= toDateTime({{d15}}, 'UTC')) AS last_15d,
       min(timestamp) AS first_seen, max(timestamp) AS last_seen,
       argMax(properties.$current_url, timestamp) AS last_url
FROM events
WHERE timestamp >= toDateTime({{start}}, 'UTC') AND timestamp < toDateTime({{end}}, 'UTC')
  AND notEmpty(person.properties.email)
GROUP BY person_id, event
ORDER BY person_id, event
LIMIT {limit} OFFSET {offset}
""".strip()
"""One row per (person, event) in the window; ``{{name}}`` are HogQL placeholders, ``{limit}``/``{offset}``
are filled per page."""


def person_email(person: dict[str, Any]) -> str | None:
    """The person's email property, lower-cased, when it looks like one."""
    props = person.get("properties") if isinstance(person.get("properties"), dict) else {}
    email = str((props or {}).get("email") or "").strip().lower()
    return email if _EMAIL.match(email) else None


def person_name(person: dict[str, Any], email: str) -> str:
    """``name``/``$name`` property, else words of the email's local part (``jane.doe`` -> ``Jane Doe``)."""
    props = person.get("properties") if isinstance(person.get("properties"), dict) else {}
    for key in ("name", "$name"):
        value = (props or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return " ".join(w.capitalize() for w in re.split(r"[._\-+]+", email.split("@", 1)[0]) if w) or email


def company_domain(email: str) -> str | None:
    """The email's domain unless it is a mailbox provider."""
    domain = email.rsplit("@", 1)[-1]
    return None if domain in GENERIC_DOMAINS else domain


def _matches(event: str, patterns: Iterable[str]) -> bool:
    for p in patterns:
        if p.startswith("*") and p.endswith("*") and len(p) > 2:
            if p[1:-1].lower() in event.lower():
                return True
        elif p == event:
            return True
    return False


@dataclass
class Activity:
    """What the query returned for one contact (all of its PostHog persons)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(int(r["total"]) for r in self.rows)

    def score(self) -> int:
        weighted = sum(3 * int(r["last_7d"]) + 2 * (int(r["last_14d"]) - int(r["last_7d"]))
                       + (int(r["total"]) - int(r["last_14d"])) for r in self.rows)
        return min(100, round(weighted / 200 * 100))

    def trend(self) -> str:
        recent = sum(int(r["last_15d"]) for r in self.rows)
        prior = self.total - recent
        if prior == 0:
            return "growing" if recent > 0 else "stable"
        change = (recent - prior) / prior
        return "growing" if change > 0.15 else "declining" if change < -0.15 else "stable"

    def features(self, mapping: dict[str, list[str]]) -> list[tuple[str, int]]:
        counts = {name: sum(int(r["total"]) for r in self.rows if r["event"] in events)
                  for name, events in mapping.items()}
        return sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))[:10]

    def signals(self, patterns: list[str]) -> list[dict[str, Any]]:
        found = [{"event": r["event"], "count": int(r["total"]), "last_seen": str(r["last_seen"]),
                  "last_url": r.get("last_url") or None}
                 for r in self.rows if _matches(str(r["event"]), patterns)]
        return sorted(found, key=lambda s: (s["last_seen"], s["event"]), reverse=True)[:10]

    def first_seen(self) -> str | None:
        return min((str(r["first_seen"]) for r in self.rows), default=None)

    def last_seen(self) -> str | None:
        return max((str(r["last_seen"]) for r in self.rows), default=None)


def _ts(value: str | None) -> str | None:
    """A HogQL DateTime (``2026-04-01 09:00:00`` or ISO) as ISO 8601 UTC."""
    if not value:
        return None
    text = value.replace(" ", "T", 1)
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


def summary_markdown(activity: Activity, features: list[tuple[str, int]], signals: list[dict[str, Any]],
                     days: int) -> str:
    lines = ["## PostHog Behavioral Summary", "",
             f"**Engagement score:** {activity.score()}/100 ({activity.trend()})",
             f"**Events ({days}d):** {activity.total}"]
    if features:
        lines += ["", "### Feature usage", *(f"- {name}: {n}" for name, n in features)]
    if signals:
        lines += ["", "### Recent signals"]
        lines += [f"- {s['event']}: {s['count']} (last {_ts(s['last_seen'])}"
                  + (f", {s['last_url']}" if s["last_url"] else "") + ")" for s in signals[:5]]
    return "\n".join(lines)


def behavioral_session(email: str, name: str, persons: list[dict[str, Any]], activity: Activity, *,
                       feature_mapping: dict[str, list[str]], signal_events: list[str],
                       window_end: datetime, days: int) -> dict[str, Any]:
    """The contact's one behavioural session (external id ``contact:<email>``, updated in place every run)."""
    features = activity.features(feature_mapping)
    signals = activity.signals(signal_events)
    created = min((str(p.get("created_at")) for p in persons if p.get("created_at")), default=None)
    last = _ts(activity.last_seen()) or created
    return {
        "external_id": f"contact:{email}",
        "source": "posthog",
        "session_type": "behavioral",
        "status": "closed",
        "name": f"PostHog Activity - {name}",
        "description": f"Behavioral data imported from PostHog for {email}",
        "user_metadata": {"email": email, "name": name},
        "messages": [{"sender_type": "system", "content": summary_markdown(activity, features, signals, days),
                      "created_at": last or window_end.isoformat()}],
        "first_message_at": _ts(activity.first_seen()) or created,
        "last_activity_at": last,
        "created_at": created,
        "updated_at": last,
        "contact_email": email,
        "contact_name": name,
        "custom_fields": {
            "posthog_person_ids": sorted(str(p.get("uuid") or p.get("id")) for p in persons),
            "posthog_engagement_score": activity.score(),
            "posthog_trend": activity.trend(),
            "posthog_event_count": activity.total,
            "posthog_feature_usage": dict(features),
            "posthog_window_days": days,
        },
    }


def contact_fields(email: str, name: str, persons: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """The contact, with the chosen person properties as ``posthog_<key>`` custom fields."""
    props: dict[str, Any] = {}
    for p in persons:  # the first person holding a property wins
        for key in keys:
            value = (p.get("properties") or {}).get(key)
            if value is not None and f"posthog_{key}" not in props:
                props[f"posthog_{key}"] = value
    title = next((str(v) for p in persons if (v := (p.get("properties") or {}).get("title"))), None)
    created = min((str(p.get("created_at")) for p in persons if p.get("created_at")), default=None)
    return {"external_id": f"contact:{email}", "email": email, "name": name, "title": title,
            "company_domain": company_domain(email), "custom_fields": props, "updated_at": created}


def event_definition_record(d: dict[str, Any]) -> dict[str, Any]:
    """One event definition as a knowledge document. Volatile numbers (last seen, 30-day volume) stay
    out, or every run would rewrite and re-embed every document."""
    name = str(d.get("name") or "")
    tags = sorted(str(t) for t in d.get("tags") or [])
    lines = [f"# PostHog event `{name}`", ""]
    if d.get("description"):
        lines += [str(d["description"]), ""]
    lines += [f"- Verified: {'yes' if d.get('verified') else 'no'}",
              f"- Tags: {', '.join(tags) if tags else 'none'}",
              f"- First defined: {d.get('created_at') or 'unknown'}"]
    return {
        "external_id": f"event:{d.get('id') or name}", "type": "raw_text", "name": f"PostHog event: {name}",
        "description": d.get("description") or None, "content": "\n".join(lines),
        "origin": "posthog_event_definitions", "updated_at": d.get("updated_at") or d.get("created_at"),
        "custom_fields": {"posthog_event": name, "posthog_tags": tags},
    }


def property_definitions_record(type: str, defs: list[dict[str, Any]]) -> dict[str, Any]:
    """All property definitions of one type (``event``/``person``) as one table document."""
    rows = sorted(defs, key=lambda d: str(d.get("name")))
    lines = [f"# PostHog {type} properties", "", "| Property | Type | Description |", "| --- | --- | --- |"]
    lines += [f"| `{d.get('name')}` | {d.get('property_type') or '-'} | "
              f"{str(d.get('description') or '').replace('|', '/') or '-'} |" for d in rows]
    stamps = [str(d["updated_at"]) for d in rows if d.get("updated_at")]
    return {
        "external_id": f"properties:{type}", "type": "raw_text", "name": f"PostHog {type} properties",
        "content": "\n".join(lines), "origin": "posthog_property_definitions",
        "updated_at": max(stamps) if stamps else None, "custom_fields": {"posthog_property_count": len(rows)},
    }
