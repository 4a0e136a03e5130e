"""HubSpot objects as hissuno records (hissuno-reference.md §5.8), shared by the sync and the webhooks so
both write the same thing and the second of them writes nothing.

Fixed from the reference: a contact's company is its real HubSpot association (the primary company's
domain), not a pseudo-domain made from the free-text ``company`` property, which is kept as a custom field.
"""

from __future__ import annotations

from typing import Any, Literal

from .client import MODIFIED, modified_at

OverwritePolicy = Literal["fill_nulls", "hubspot_wins", "never_overwrite"]
MERGE_STRATEGY = {"fill_nulls": "fill_nulls", "hubspot_wins": "overwrite", "never_overwrite": "never_overwrite"}
"""The stream's overwrite policy as the ingest primitives' merge strategy."""

_COMPANY_MAPPED = frozenset({"name", "domain", "industry", "country", "numberofemployees", "description",
                             "annualrevenue"})
_CONTACT_MAPPED = frozenset({"firstname", "lastname", "email", "phone", "jobtitle", "lifecyclestage"})
_TIMES = frozenset({"createdate", *MODIFIED.values()})
"""Timestamps are the record's ``updated_at``, not custom fields (they change with every edit)."""


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def _custom(props: dict[str, Any], mapped: frozenset[str]) -> dict[str, Any]:
    return {f"hubspot_{k}": v for k, v in sorted(props.items())
            if k not in mapped and k not in _TIMES and _text(v) is not None}


def company_fields(company: dict[str, Any], policy: OverwritePolicy) -> dict[str, Any] | None:
    """``ctx.ingest.company`` fields; None for a company without a domain (the reference skips it)."""
    props = company.get("properties") or {}
    domain = _text(props.get("domain"))
    if domain is None:
        return None
    custom = _custom(props, _COMPANY_MAPPED)
    revenue = _float(props.get("annualrevenue"))
    if revenue is not None:
        custom["hubspot_annual_revenue"] = revenue
    return {
        "external_id": str(company["id"]), "domain": domain, "name": _text(props.get("name")),
        "industry": _text(props.get("industry")), "country": _text(props.get("country")),
        "employee_count": _int(props.get("numberofemployees")), "notes": _text(props.get("description")),
        "custom_fields": custom, "merge_strategy": MERGE_STRATEGY[policy],
        "updated_at": modified_at(company, "companies"),
    }


def contact_fields(contact: dict[str, Any], company_domain: str | None,
                   policy: OverwritePolicy) -> dict[str, Any] | None:
    """``ctx.ingest.contact`` fields; None for a contact without an email (the reference skips it)."""
    props = contact.get("properties") or {}
    email = _text(props.get("email"))
    if email is None:
        return None
    name = " ".join(p for p in (_text(props.get("firstname")), _text(props.get("lastname"))) if p) or email
    custom = _custom(props, _CONTACT_MAPPED)
    stage = _text(props.get("lifecyclestage"))
    if stage is not None:
        custom["hubspot_lifecycle_stage"] = stage
    return {
        "external_id": str(contact["id"]), "email": email, "name": name, "phone": _text(props.get("phone")),
        "title": _text(props.get("jobtitle")), "company_domain": company_domain, "custom_fields": custom,
        "merge_strategy": MERGE_STRATEGY[policy], "updated_at": modified_at(contact, "contacts"),
    }
