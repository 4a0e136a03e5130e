"""``define_plugin``: the Python form of the seed's ``definePlugin``, validated at import time."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .auth import ApiKeyAuth, Auth, CustomAuth, GitHubAppAuth, OAuth2Auth
from .errors import PluginDefinitionError
from .streams import Stream
from .types import CATEGORIES, FREQUENCIES, STREAM_KINDS, Category

PLUGIN_ID_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
STREAM_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
BASE_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
RESERVED_PLUGIN_IDS = frozenset({"catalog", "oauth", "webhook", "connections", "runs", "health", "static"})
RESERVED_HANDLERS = frozenset({"streams", "sync", "connect", "callback", "instances", "runs", "events",
                               "errors"})


class Icon(BaseModel):
    """Logo of a plugin card."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str | None = None
    """URL path or data URI."""
    dark_src: str | None = None
    """Variant for dark mode."""
    invert_in_dark: bool = False
    """Invert colours in dark mode."""
    inline_svg: str | None = None
    """An inline SVG document."""


class PluginUI(BaseModel):
    """Escape hatch replacing the generic config dialog with the plugin's own page or script."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config_page: str | None = None
    """Path (relative to the mount) of a page that replaces the generic dialog; a reconnect adds
    ``?connection_id=``. Typically one of the plugin's ``custom_handlers`` returning HTML."""
    script: str | None = None
    """JavaScript module (path relative to the mount, or an absolute URL) loaded into the marketplace.
    It exports ``openConfigDialog({plugin, api, connectionId, onDone, toast})``; ``api(path, {json})``
    calls the routes with the user's session."""


class PluginDef(BaseModel):
    """A validated, immutable plugin definition."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str
    """Stable id; used in URLs, the registry and ``plugin_id`` columns."""
    name: str
    """Display name."""
    description: str
    """One-line summary."""
    category: Category
    """Marketplace group."""
    icon: Icon
    """Card logo."""
    auth: Auth = Field(discriminator="type")
    """How users connect."""
    streams: dict[str, Stream]
    """Stream key -> definition."""
    base_urls: dict[str, str] = Field(default_factory=dict)
    """Named provider bases (``API``, ``AUTH``...), each overridable by ``HISSUNO_<PLUGIN>_<NAME>_URL``."""
    multi_instance: bool = True
    """False: a project may connect only one account."""
    coming_soon: bool = False
    """Shown disabled; excluded from ``list_available_plugins``."""
    setup_label: str | None = None
    """Override of the card button label."""
    resolve_connection: Callable[..., Any] | None = None
    """Static webhook URL: ``(event: WebhookEvent, ctx) -> connection id | Response | None``."""
    webhook_signature: Any = None
    """Declared signature scheme (``kit.signatures``) enforced by the shared webhook path."""
    custom_handlers: dict[str, Callable[..., Any]] = Field(default_factory=dict)
    """Name -> handler, routed at plugin and connection level."""
    connection_handlers: frozenset[str] = frozenset()
    """Names of custom handlers that need a connection (credentials loaded)."""
    ui: PluginUI | None = None
    """Custom config dialog."""
    rate_limit_per_minute: float | None = Field(default=None, gt=0)
    """Documented request budget per provider account. The runtime paces every HTTP client of the
    account, in every process (task processes, the CLI, the web server), through one budget of this
    rate kept in the store (``SharedRateBudget``), so the account's streams may run side by side."""
    rate_limit_burst: int | None = Field(default=None, gt=0)
    """Requests allowed back to back before pacing starts; default a minute's worth."""
    docs_url: str | None = None
    """Link to the provider's docs."""

    @property
    def auth_type(self) -> str:
        """``api_key``, ``oauth2``, ``github_app`` or ``custom``."""
        return self.auth.type

    @property
    def secret_fields(self) -> tuple[str, ...]:
        """Credential keys the auth schema marks secret."""
        fields = getattr(self.auth, "fields", ())
        return tuple(f.id for f in fields if f.secret)

    def stream(self, key: str) -> Stream:
        """Return the stream named ``key`` (KeyError when absent)."""
        return self.streams[key]

    @property
    def conn_type(self) -> str:
        """Airflow connection type of this plugin: ``hissuno_<id>`` (``-`` becomes ``_``), as CONTRACT.md fixes."""
        return "hissuno_" + self.id.replace("-", "_")


def _loc(err: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(root)"


def define_plugin(**definition: Any) -> PluginDef:
    """Validate a plugin definition and return it frozen.

    Raises:
        PluginDefinitionError: one line per problem, naming plugin, field path, expected and received.
    """
    pid = str(definition.get("id", "?"))
    problems: list[str] = []

    if not isinstance(definition.get("id"), str) or not PLUGIN_ID_RE.match(definition["id"]):
        problems.append(
            f"id: expected lowercase letter then lowercase letters, digits, '_' or '-'; "
            f"got {definition.get('id')!r}"
        )
    elif definition["id"] in RESERVED_PLUGIN_IDS:
        problems.append(f"id: {definition['id']!r} is reserved by the web routes")

    cat = definition.get("category")
    if cat not in CATEGORIES:
        problems.append(f"category: expected one of {', '.join(CATEGORIES)}; got {cat!r}")

    streams = definition.get("streams")
    if not isinstance(streams, Mapping) or not streams:
        problems.append("streams: at least one stream is required; got none")
        streams = {}
    for key, st in streams.items():
        where = f"streams.{key}"
        if not isinstance(key, str) or not STREAM_KEY_RE.match(key):
            problems.append(
                f"{where}: stream key expected lowercase letter then lowercase letters, digits or '_'; "
                f"got {key!r}"
            )
        if not isinstance(st, Stream):
            problems.append(f"{where}: expected a Stream(...); got {type(st).__name__}")
            continue
        if st.sync is None and st.webhook is None:
            problems.append(f"{where}: a stream needs a sync or a webhook handler; got neither")
        if st.fetch is not None and not callable(st.fetch):
            problems.append(f"{where}.fetch: expected a function (ctx, external_id); got {type(st.fetch).__name__}")
        if st.kind not in STREAM_KINDS:
            problems.append(f"{where}.kind: expected one of {', '.join(STREAM_KINDS)}; got {st.kind!r}")
        if st.frequencies is not None:
            bad = [f for f in st.frequencies if f not in FREQUENCIES]
            if bad or not st.frequencies:
                problems.append(
                    f"{where}.frequencies: expected a non-empty subset of {', '.join(FREQUENCIES)}; "
                    f"got {list(st.frequencies)!r}"
                )
            if "webhook" in st.frequencies and st.webhook is None:
                problems.append(f"{where}.frequencies: 'webhook' needs a webhook handler")
            if any(f != "webhook" for f in st.frequencies) and st.sync is None:
                problems.append(f"{where}.frequencies: polling frequencies need a sync handler")
        for attr in ("filters", "settings"):
            model = getattr(st, attr)
            if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
                problems.append(f"{where}.{attr}: expected a pydantic model class; got {model!r}")
            elif model is not None:
                try:
                    model()
                except ValidationError as exc:
                    fields = ", ".join(_loc(e) for e in exc.errors())
                    problems.append(f"{where}.{attr}: every field needs a default; missing for {fields}")

    for name in definition.get("base_urls", {}) or {}:
        if not BASE_NAME_RE.match(str(name)):
            problems.append(f"base_urls.{name}: expected an upper-case name such as API or AUTH")
    auth = definition.get("auth")
    if not isinstance(auth, (ApiKeyAuth, OAuth2Auth, GitHubAppAuth, CustomAuth)):
        problems.append(
            "auth: expected ApiKeyAuth, OAuth2Auth, GitHubAppAuth or CustomAuth; "
            f"got {type(auth).__name__}"
        )
    elif isinstance(auth, OAuth2Auth):
        for url_field in ("authorize_url", "token_url"):
            url = getattr(auth, url_field)
            m = re.match(r"^\{([A-Z][A-Z0-9_]*)\}", url)
            if m and m.group(1) not in (definition.get("base_urls") or {}):
                problems.append(f"auth.{url_field}: base {m.group(1)!r} is not declared in base_urls")
            elif not m and not url.startswith(("http://", "https://")):
                problems.append(f"auth.{url_field}: expected an absolute URL or '{{BASE}}/path'; got {url!r}")
    for hname in definition.get("custom_handlers", {}) or {}:
        if hname in RESERVED_HANDLERS or not STREAM_KEY_RE.match(str(hname).lower()):
            problems.append(f"custom_handlers.{hname}: name is reserved or not a simple identifier")

    if problems:
        raise PluginDefinitionError(pid, problems)
    try:
        return PluginDef(**definition)
    except ValidationError as exc:
        raise PluginDefinitionError(
            pid, [f"{_loc(e)}: {e['msg']}; got {_short(e.get('input'))}" for e in exc.errors()]
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
