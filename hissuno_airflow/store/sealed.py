"""Secrets at rest: the one Fernet key (derived from ``settings.secret_key()``) that encrypts stored
credentials, and the sealing of secret connection settings with it.

A connection's settings are jsonb the UI and CLI show, but some of them are secrets: the webhook
verification secret (``webhook_secret``, or whatever setting the plugin's signature scheme reads), any
setting named like a secret (``kit.redaction.is_sensitive_key``), and any setting named after one of the
plugin's secret auth fields. Those values are stored sealed (``"sealed:v1:<Fernet token>"``), opened
when a row is read (so verification and handlers see the value), and masked in every public view.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from .. import registry, settings
from ..kit.errors import UnknownPluginError
from ..kit.redaction import MASK, is_sensitive_key

SEALED_PREFIX = "sealed:v1:"


def fernet() -> Any:
    """The Fernet of everything hissuno keeps secret in its store (credentials and secret settings)."""
    return _fernet_for(settings.secret_key())


@functools.lru_cache(maxsize=4)
def _fernet_for(secret: bytes) -> Any:
    # Built once per key: webhook intake opens a connection's sealed secret on every request.
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"hissuno-credentials:" + secret).digest()))


def declared_secret_settings(plugin_id: str) -> frozenset[str]:
    """Settings the plugin declares secret: its signature scheme's secret setting and its secret fields."""
    try:
        plugin = registry.get_plugin(plugin_id)
    except UnknownPluginError:
        return frozenset()
    names = {f.id for f in getattr(plugin.auth, "fields", ()) if f.secret}
    setting = getattr(plugin.webhook_signature, "secret_setting", None)
    if isinstance(setting, str) and setting:
        names.add(setting)
    return frozenset(names)


def is_secret_setting(key: str, plugin_id: str) -> bool:
    """True when the setting ``key`` of a ``plugin_id`` connection holds a secret."""
    return is_sensitive_key(key) or key in declared_secret_settings(plugin_id)


def _is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def seal_settings(plugin_id: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` with each secret setting's value encrypted (already sealed ones and empty ones stay)."""
    out = dict(values or {})
    f = None
    for key, value in out.items():
        if value in (None, "") or _is_sealed(value) or not is_secret_setting(key, plugin_id):
            continue
        f = f or fernet()
        raw = value if isinstance(value, str) else "json:" + _dumps(value)
        out[key] = SEALED_PREFIX + f.encrypt(raw.encode()).decode()
    return out


def open_settings(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` with sealed values decrypted (legacy plaintext passes through unchanged)."""
    out = dict(values or {})
    f = None
    for key, value in out.items():
        if _is_sealed(value):
            f = f or fernet()
            raw = f.decrypt(value[len(SEALED_PREFIX):].encode()).decode()
            out[key] = _loads(raw[5:]) if raw.startswith("json:") else raw
    return out


def mask_settings(plugin_id: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` for display: every secret setting that is set shows as the mask."""
    return {k: (MASK if v not in (None, "") and (_is_sealed(v) or is_secret_setting(k, plugin_id)) else v)
            for k, v in (values or {}).items()}


def needs_sealing(plugin_id: str, values: Mapping[str, Any] | None) -> bool:
    """True when a secret setting of ``values`` is stored in plaintext (written before sealing existed)."""
    return any(v not in (None, "") and not _is_sealed(v) and is_secret_setting(k, plugin_id)
               for k, v in (values or {}).items())


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def _loads(raw: str) -> Any:
    import json

    return json.loads(raw)


def seal_plaintext_settings(conn: Any) -> int:
    """Data migration ``0008_seal_secret_settings``: seal secret settings stored in plaintext; returns how
    many connections changed. Idempotent (sealed values are left alone)."""
    from psycopg.types.json import Jsonb

    changed = 0
    rows = conn.execute("SELECT id, plugin_id, settings FROM integration_connections FOR UPDATE").fetchall()
    for cid, plugin_id, values in rows:
        if needs_sealing(plugin_id, values):
            conn.execute("UPDATE integration_connections SET settings = %s WHERE id = %s",
                         (Jsonb(seal_settings(plugin_id, values)), cid))
            changed += 1
    return changed


KEY_MARK = "secret_key"
"""``setup_marks`` row holding a fingerprint of the key this store's secrets are sealed with."""


def key_fingerprint(secret: bytes) -> str:
    """A short, one-way fingerprint of a secret key (says whether two processes share it, nothing more)."""
    return hashlib.sha256(b"hissuno-key-fingerprint:" + secret).hexdigest()[:16]


def check_secret_key(store: Any) -> None:
    """Refuse a process whose secret key is not the one this store's secrets are sealed with.

    The first process to call this records the key's fingerprint. Without ``HISSUNO_SECRET_KEY`` every
    host generates a key of its own (``$HISSUNO_HOME/secret.key``): a second API-server replica would
    then fail every OAuth callback another replica started and could not open the credentials the first
    one saved. Saying so at start-up beats finding it out one request at a time.

    Raises:
        NotConfigured: the key differs from the store's (``field``: ``HISSUNO_SECRET_KEY``).
    """
    from psycopg.types.json import Jsonb

    from ..kit.errors import NotConfigured

    mine = key_fingerprint(settings.secret_key())
    with store.connection() as conn:
        conn.execute("INSERT INTO setup_marks (name, data) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                     (KEY_MARK, Jsonb({"fingerprint": mine})))
        row = conn.execute("SELECT data FROM setup_marks WHERE name = %s", (KEY_MARK,)).fetchone()
    recorded = (row["data"] or {}).get("fingerprint") if row else mine
    if recorded != mine:
        raise NotConfigured(
            "this process's secret key is not the one the store's credentials and OAuth states are sealed"
            " with: give every process that shares the store (API-server replicas, workers, the CLI) the"
            " same HISSUNO_SECRET_KEY (see docs/deploying.md)", field="HISSUNO_SECRET_KEY")
