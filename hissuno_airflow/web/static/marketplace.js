// The integrations marketplace: catalog cards, connect dialogs generated from auth fields, connected
// accounts with stream forms generated from the pydantic JSON schemas, and sync-now over SSE.
// Every value from the server is rendered with textContent (never innerHTML).
(() => {
  "use strict";
  const body = document.body;
  const API = body.dataset.api;
  const MODE = body.dataset.mode;
  const AIRFLOW_BASE = body.dataset.airflowBase || "";
  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, props = {}, ...kids) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) n.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid) n.append(kid);
    return n;
  };
  const state = { catalog: [], byId: {}, connections: [] };

  // Under `hissuno serve` the page can be opened with ?token=...; it becomes a SameSite cookie so
  // fetch, EventSource and the OAuth return leg all carry it.
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    document.cookie = `hissuno_token=${encodeURIComponent(params.get("token"))}; path=/; SameSite=Lax`;
    params.delete("token");
  }

  // An optional action ({label, run}) adds a button; such a toast stays until used or replaced.
  function toast(text, isError = false, action = null) {
    const t = $("#toast");
    t.textContent = text;
    t.className = isError ? "err" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    if (action) {
      t.append(" ", el("button", { text: action.label, onclick: () => { t.hidden = true; action.run(); } }));
      return;
    }
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  class ApiError extends Error {
    constructor(message, code, field, connection) {
      super(message); this.code = code; this.field = field; this.connection = connection;
    }
  }

  async function api(path, opts = {}) {
    const init = { credentials: "same-origin", ...opts };
    if (opts.json !== undefined) {
      init.method = init.method || "POST";
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(opts.json);
    }
    const r = await fetch(API + path, init);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (r.status === 401) { showAuth(); throw new ApiError("Sign in required", "unauthorized"); }
    if (!r.ok) throw new ApiError((data && data.message) || r.statusText, data && data.error, data && data.field, data && data.connection);
    return data;
  }

  function showAuth() {
    $("#auth").hidden = false;
    $("#app").hidden = true;
    $("#auth-airflow").hidden = MODE !== "airflow";
    $("#auth-token").hidden = MODE === "airflow";
  }
  $("#auth-token").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = new FormData(ev.target).get("token");
    document.cookie = `hissuno_token=${encodeURIComponent(token)}; path=/; SameSite=Lax`;
    location.reload();
  });

  function icon(plugin) {
    const i = plugin.icon || {};
    if (i.inline_svg) return el("img", { class: "plugin-icon", alt: "", src: "data:image/svg+xml;utf8," + encodeURIComponent(i.inline_svg) });
    if (i.src) return el("img", { class: "plugin-icon", alt: "", src: i.src });
    return el("span", { class: "plugin-icon initial", text: plugin.name.slice(0, 1).toUpperCase() });
  }

  // -- catalog ---------------------------------------------------------------------------------

  function renderCatalog() {
    const root = $("#catalog");
    root.replaceChildren();
    const groups = {};
    for (const p of state.catalog) (groups[p.category] = groups[p.category] || []).push(p);
    for (const [cat, plugins] of Object.entries(groups).sort()) {
      const cards = el("div", { class: "cards" });
      for (const p of plugins) {
        const connected = state.connections.filter((c) => c.plugin_id === p.id).length;
        const blocked = p.coming_soon || (!p.multi_instance && connected > 0);
        cards.append(el("div", { class: "card", "data-plugin": p.id },
          el("div", { class: "top" }, icon(p), el("div", {},
            el("div", { class: "name", text: p.name }),
            el("div", { class: "muted", text: connected ? `${connected} connected` : p.auth.type.replace("_", " ") }))),
          el("p", { text: p.description }),
          el("div", { class: "actions" }, el("button", {
            class: "primary", disabled: blocked, text: p.coming_soon ? "Coming soon" : (p.setup_label || "Connect"),
            onclick: () => openConnect(p),
          }), /^https?:\/\//.test(p.docs_url || "") ? el("a", { class: "docs", href: p.docs_url, target: "_blank",
            rel: "noopener noreferrer", text: "Docs" }) : null)));
      }
      root.append(el("div", { class: "category" }, el("h4", { text: cat.replace("_", " ") }), cards));
    }
  }

  // -- connect dialog --------------------------------------------------------------------------

  async function openConnect(plugin, reconnectId) {
    // A plugin's own page or script replaces the generic dialog; paths are relative to the mount.
    const mount = new URL(API.replace(/api$/, ""), location.href);
    const own = (path) => new URL(path.replace(/^\//, ""), mount);
    if (plugin.ui && plugin.ui.config_page) {
      const page = own(plugin.ui.config_page);
      if (reconnectId) page.searchParams.set("connection_id", reconnectId);
      location.href = page.href;
      return;
    }
    if (plugin.ui && plugin.ui.script) {
      try {
        const mod = await import(own(plugin.ui.script).href);
        await mod.openConfigDialog({ plugin, api, connectionId: reconnectId, onDone: refresh, toast });
      } catch (e) {
        toast(`${plugin.name}: ${e.message}`, true);
      }
      return;
    }
    const dlg = $("#config-dialog");
    $("#config-title").textContent = `Connect ${plugin.name}`;
    $("#config-desc").textContent = plugin.description;
    $("#config-error").hidden = true;
    const update = $("#config-update");
    update.hidden = true;
    const fields = $("#config-fields");
    fields.replaceChildren();
    const list = plugin.auth.fields || [];
    for (const f of list) {
      fields.append(el("label", {}, el("span", { text: f.label + (f.required ? " *" : "") }),
        el("input", { name: f.id, type: f.secret ? "password" : "text", placeholder: f.placeholder || "",
                      required: f.required, autocomplete: "off", pattern: f.pattern || undefined }),
        f.help_text ? el("span", { class: "help", text: f.help_text }) : null));
    }
    if (!list.length) fields.append(el("p", { class: "muted", text: `You will continue on ${plugin.name} to authorize access.` }));
    const form = $("#config-form");
    // Connecting an account that is connected already is refused (409 account_exists, naming the
    // connection); updating it is a second, explicit request naming that connection.
    const send = async (connectionId) => {
      const submit = $("#config-submit");
      submit.disabled = true;
      update.hidden = true;
      fields.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
      const credentials = {};
      for (const f of list) credentials[f.id] = form.elements[f.id].value;
      try {
        const res = await api(`/plugins/${plugin.id}/connect`, { json: { credentials, connection_id: connectionId } });
        if (res && res.authorize_url) { location.href = res.authorize_url; return; }
        dlg.close();
        toast(`${connectionId ? "Updated" : "Connected"} ${res.account_label || plugin.name}`);
        await refresh();
      } catch (e) {
        const err = $("#config-error");
        err.hidden = false;
        if (e.code === "account_exists" && e.connection) {
          err.textContent = `${e.connection.account_label} is already connected (${e.connection.id}). Update that connection with these settings?`;
          update.textContent = `Update ${e.connection.account_label}`;
          update.onclick = () => send(e.connection.id);
          update.hidden = false;
          return;
        }
        err.textContent = e.message;
        const name = (e.field || "").replace(/^credentials\./, "");
        if (name && form.elements[name]) form.elements[name].classList.add("invalid");
      } finally {
        submit.disabled = false;
      }
    };
    form.onsubmit = (ev) => { ev.preventDefault(); send(reconnectId); };
    $("#config-cancel").onclick = () => dlg.close();
    dlg.showModal();
  }

  // -- schema forms ----------------------------------------------------------------------------

  function propType(schema) {
    if (schema.anyOf) {
      const t = schema.anyOf.find((s) => s.type && s.type !== "null");
      return t ? { ...t, nullable: true } : { type: "string", nullable: true };
    }
    return schema;
  }

  function schemaFields(fieldset, schema, values, prefix) {
    fieldset.replaceChildren(fieldset.firstElementChild);
    const props = (schema && schema.properties) || {};
    fieldset.hidden = !Object.keys(props).length;
    for (const [name, raw] of Object.entries(props)) {
      const t = propType(raw);
      const value = values && name in values ? values[name] : raw.default;
      let input;
      if (t.enum) {
        input = el("select", {}, ...t.enum.map((v) => el("option", { value: v, text: v })));
        if (value !== undefined && value !== null) input.value = value;
      } else if (t.type === "boolean") {
        input = el("input", { type: "checkbox" });
        input.checked = !!value;
      } else {
        const type = t.type === "integer" || t.type === "number" ? "number" : "text";
        input = el("input", { type, placeholder: t.format === "date-time" ? "2026-01-31T00:00:00Z" : "" });
        if (value !== undefined && value !== null) input.value = typeof value === "object" ? JSON.stringify(value) : value;
      }
      input.dataset.path = `${prefix}.${name}`;
      input.dataset.kind = t.type || "string";
      fieldset.append(el("label", { title: raw.description || "" }, el("span", { text: raw.title || name }), input));
    }
  }

  function collect(fieldset) {
    const out = {};
    fieldset.querySelectorAll("[data-path]").forEach((input) => {
      const key = input.dataset.path.split(".").slice(1).join(".");
      if (input.type === "checkbox") { out[key] = input.checked; return; }
      const v = input.value.trim();
      if (v === "") return;
      if (input.dataset.kind === "integer" || input.dataset.kind === "number") out[key] = Number(v);
      else if (input.dataset.kind === "object" || input.dataset.kind === "array") {
        try { out[key] = JSON.parse(v); } catch (_) { out[key] = v; }
      } else out[key] = v;
    });
    return out;
  }

  // -- connections and streams -----------------------------------------------------------------

  function statusText(row) {
    if (!row) return "Not enabled";
    if (!row.last_sync_status) return row.enabled ? "Enabled · never synced" : "Disabled";
    const c = row.last_sync_counts || {};
    const when = row.last_sync_at ? new Date(row.last_sync_at).toLocaleString() : "";
    const counts = ["found", "synced", "skipped", "failed"].filter((k) => c[k]).map((k) => `${c[k]} ${k}`).join(", ");
    return [row.last_sync_status, counts, when && `cursor ${when}`, row.last_sync_error].filter(Boolean).join(" · ");
  }

  function streamWidget(plugin, conn, def, row) {
    const node = $("#stream-template").content.firstElementChild.cloneNode(true);
    node.dataset.stream = row ? row.stream_id : def.key;
    $(".s-label", node).textContent = def.label + (row && row.stream_id.includes(":") ? ` · ${row.stream_id.split(":").slice(1).join(":")}` : "");
    $(".s-kind", node).textContent = def.kind;
    $(".s-desc", node).textContent = def.description || "";
    const status = $(".s-status", node);
    const setStatus = (r) => { status.textContent = statusText(r); status.className = "s-status status-" + ((r && r.last_sync_status) || "none"); };
    setStatus(row);
    const freq = $(".s-frequency", node);
    for (const f of def.frequencies) freq.append(el("option", { value: f, text: f }));
    freq.value = row ? row.frequency : def.default_frequency;
    $(".s-enabled", node).checked = row ? row.enabled : false;
    schemaFields($(".s-filters", node), def.filters_schema, row && row.filter_config, "filters");
    schemaFields($(".s-settings", node), def.settings_schema, row && row.settings, "settings");
    let current = row;
    const instanceSel = $(".s-instance", node);
    if (def.parameterized && !row) {
      $(".s-instance-wrap", node).hidden = false;
      instanceSel.append(el("option", { value: "", text: "Loading…" }));
      api(`/plugins/${plugin.id}/${conn.id}/instances/${def.key}`).then((res) => {
        instanceSel.replaceChildren(...res.instances.map((i) => el("option", { value: i.id, text: i.label })));
      }).catch((e) => { instanceSel.replaceChildren(el("option", { value: "", text: e.message })); });
    }
    const dag = $(".s-dag", node);
    // Only an enabled stream has a DAG in Airflow: no link to a page that does not exist.
    const showDag = (r) => {
      const live = !!(r && r.dag_id && r.enabled && MODE === "airflow");
      if (live) dag.href = `${AIRFLOW_BASE}/dags/${encodeURIComponent(r.dag_id)}`;
      dag.hidden = !live;
      dag.title = live ? `DAG ${r.dag_id}` : "";
    };
    showDag(row);
    const errBox = $(".s-error", node);

    async function save() {
      errBox.hidden = true;
      node.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
      const payload = {
        stream_key: def.key, enabled: $(".s-enabled", node).checked, frequency: freq.value,
        filters: collect($(".s-filters", node)), settings: collect($(".s-settings", node)),
      };
      if (def.parameterized) payload.instance_id = current ? current.stream_id.split(":").slice(1).join(":") : instanceSel.value;
      try {
        current = await api(`/plugins/${plugin.id}/${conn.id}/streams`, { json: payload });
        node.dataset.stream = current.stream_id;
        setStatus(current);
        showDag(current);
        toast(`${def.label}: saved`);
        return current;
      } catch (e) {
        errBox.textContent = e.message;
        errBox.hidden = false;
        const bad = e.field && node.querySelector(`[data-path="${CSS.escape(e.field)}"]`);
        if (bad) bad.classList.add("invalid");
        else if (e.field === "frequency") freq.classList.add("invalid");
        throw e;
      }
    }

    // Sync now runs a saved, enabled stream; it never saves a stream disabled on the way.
    const NOT_ENABLED = "This stream is not enabled: tick Enabled and Save, then Sync now.";
    const notEnabled = () => {
      errBox.textContent = NOT_ENABLED;
      errBox.hidden = false;
    };

    function sync() {
      const run = async () => {
        errBox.hidden = true;
        if (!current && $(".s-enabled", node).checked) await save();
        if (!current || !current.enabled) { notEnabled(); return; }
        const bar = $(".progress", node);
        const meter = $(".bar", node);
        const text = $(".progress-text", node);
        const btn = $(".s-sync", node);
        bar.hidden = false;
        bar.dataset.state = "running";
        btn.disabled = true;
        const set = (pct, msg) => {
          meter.style.setProperty("--pct", `${pct}%`);
          meter.setAttribute("aria-valuenow", String(Math.round(pct)));
          text.textContent = msg;
        };
        set(2, "Starting sync…");
        const es = new EventSource(`${API}/plugins/${plugin.id}/${conn.id}/sync?stream_id=${encodeURIComponent(current.stream_id)}`);
        let done = false;
        let heard = false;
        let pct = 2;
        es.onmessage = async (m) => {
          heard = true;
          const d = JSON.parse(m.data);
          if (d.type === "complete" || d.type === "error") {
            done = true;
            es.close();
            bar.dataset.state = d.type;
            set(d.type === "complete" ? 100 : pct, d.message || d.type);
            btn.disabled = false;
            const res = await api(`/plugins/${plugin.id}/${conn.id}/streams`);
            const fresh = res.streams.find((s) => s.stream_id === current.stream_id);
            if (fresh) { current = fresh; setStatus(fresh); }
            historyBtn.hidden = false;
            if (!history.hidden) showHistory().catch(() => {});
            return;
          }
          if (d.total) pct = Math.max(pct, Math.min(99, (100 * d.current) / d.total));
          const c = d.counts || {};
          set(pct, [d.message, c.found && `${c.found} found`, c.synced && `${c.synced} synced`].filter(Boolean).join(" · ") || d.type);
        };
        es.onerror = async () => {
          if (done) return;
          es.close();
          bar.dataset.state = "error";
          text.textContent = "Connection to the sync was lost";
          btn.disabled = false;
          if (heard) return;
          // Refused before any event (an EventSource cannot read the 4xx body): say why when we can.
          try {
            const res = await api(`/plugins/${plugin.id}/${conn.id}/streams`);
            const fresh = res.streams.find((s) => s.stream_id === current.stream_id);
            if (!fresh || !fresh.enabled) {
              bar.hidden = true;
              if (fresh) current = fresh;
              setStatus(fresh);
              showDag(fresh);
              notEnabled();
            }
          } catch (_) { /* keep "lost" */ }
        };
      };
      run().catch(() => {});
    }

    // The last runs of this stream (manual, scheduled, backfill, webhook), newest first.
    const history = $(".s-history", node);
    const historyBtn = $(".s-history-toggle", node);
    historyBtn.hidden = !row;
    async function showHistory() {
      const res = await api(`/plugins/${plugin.id}/${conn.id}/runs?limit=10&stream_id=${encodeURIComponent(current.stream_id)}`);
      const when = (t) => (t ? new Date(t).toLocaleString() : "");
      $("tbody", history).replaceChildren(...res.runs.map((r) => {
        const c = r.counts || {};
        const note = r.error_message || (r.window_start || r.window_end ? `${when(r.window_start)} → ${when(r.window_end)}` : "");
        return el("tr", { class: "run status-" + r.status },
          ...[when(r.started_at), r.triggered_by, r.status, c.found || 0, c.synced || 0, c.skipped || 0, c.failed || 0, note]
            .map((v) => el("td", { text: String(v) })));
      }));
      if (!res.runs.length) $("tbody", history).append(el("tr", {}, el("td", { colspan: "8", text: "No runs yet" })));
      history.hidden = false;
    }
    historyBtn.addEventListener("click", () => {
      if (!history.hidden) { history.hidden = true; return; }
      showHistory().catch((e) => toast(e.message, true));
    });

    $(".s-save", node).addEventListener("click", () => { save().then(() => { historyBtn.hidden = false; }).catch(() => {}); });
    $(".s-sync", node).addEventListener("click", sync);
    if (!def.has_sync) $(".s-sync", node).hidden = true;
    return node;
  }

  // Failed webhook events stay in the inbox with their error until a drain succeeds.
  function eventsPanel(plugin, conn) {
    const panel = el("div", { class: "events muted", "data-events": conn.id });
    const load = async () => {
      const res = await api(`/plugins/${plugin.id}/${conn.id}/events?status=failed`);
      panel.replaceChildren();
      if (!res.events.length) { panel.textContent = "Webhook events: no failures"; return; }
      panel.append(el("strong", { text: `${res.events.length} failed webhook event(s)` }));
      const list = el("ul");
      for (const e of res.events.slice(0, 10)) {
        list.append(el("li", { text: `${e.stream_id} · ${e.event_type || e.event_id} · attempt ${e.attempts} · ${e.error || ""}` }));
      }
      panel.append(list);
      const streams = [...new Set(res.events.map((e) => e.stream_id))];
      panel.append(el("button", { text: "Retry now", onclick: async () => {
        for (const sid of streams) await api(`/plugins/${plugin.id}/${conn.id}/events/process`, { json: { stream_id: sid } });
        await load();
      } }));
    };
    load().catch((e) => { panel.textContent = e.message; });
    return panel;
  }

  // Records that failed to ingest stay listed with their (redacted) error until a replay or a later sync
  // ingests them; Replay re-fetches each by id where the plugin can, else re-ingests the kept record.
  function failedPanel(plugin, conn) {
    const panel = el("div", { class: "failed-records muted", "data-failed": conn.id });
    const load = async () => {
      const res = await api(`/plugins/${plugin.id}/${conn.id}/errors?status=open&limit=50`);
      panel.replaceChildren();
      if (!res.errors.length) { panel.textContent = "Failed records: none"; return; }
      panel.append(el("strong", { text: `${res.errors.length} failed record(s)` }));
      const list = el("ul");
      const replay = async (json) => {
        const out = await api(`/plugins/${plugin.id}/${conn.id}/errors/replay`, { json });
        toast(`Replay: ${out.resolved} resolved, ${out.failed} still failing`, out.failed > 0);
        await load();
      };
      for (const e of res.errors.slice(0, 20)) {
        const how = e.replay ? `replay by ${e.replay}` : (e.replay_blocked || "cannot be replayed");
        const item = el("li", { "data-error": e.id, text: `${e.stream_id} · ${e.kind} ${e.external_id || "(no id)"} · ${e.reason}` +
          (e.attempts ? ` · ${e.attempts} replay(s), last: ${e.last_error || ""}` : "") + ` · ${how} ` });
        if (e.replay) item.append(el("button", { text: "Replay", onclick: () => replay({ ids: [e.id] }).catch((x) => toast(x.message, true)) }));
        list.append(item);
      }
      panel.append(list);
      panel.append(el("button", { text: "Replay all", onclick: () => replay({ all: true }).catch((x) => toast(x.message, true)) }));
    };
    load().catch((e) => { panel.textContent = e.message; });
    return panel;
  }

  function renderConnections() {
    const root = $("#connections");
    root.replaceChildren();
    $("#no-connections").hidden = state.connections.length > 0;
    for (const conn of state.connections) {
      const plugin = state.byId[conn.plugin_id];
      if (!plugin) continue;
      const box = el("div", { class: "connection", "data-connection": conn.id },
        el("div", { class: "head" }, icon(plugin),
          el("div", { class: "grow" }, el("strong", { text: conn.account_label }),
            el("div", { class: "muted", text: `${plugin.name} · ${conn.external_account_id}` }),
            conn.needs_reconnect
              ? el("div", { class: "reconnect-needed", role: "alert",
                            text: `Reconnect needed: ${conn.auth_error || "the provider refused the credentials"}` })
              : null),
          el("button", { text: "Reconnect", onclick: () => openConnect(plugin, conn.id) }),
          el("button", { class: "danger", text: "Disconnect", onclick: async () => {
            if (!confirm(`Disconnect ${conn.account_label}? Synced data is kept.`)) return;
            await api(`/plugins/${plugin.id}/${conn.id}`, { method: "DELETE" });
            await refresh();
          } })));
      if (plugin.webhooks) box.append(eventsPanel(plugin, conn));
      box.append(failedPanel(plugin, conn));
      for (const def of plugin.streams) {
        const rows = conn.streams.filter((s) => s.stream_id.split(":")[0] === def.key);
        if (!def.parameterized) box.append(streamWidget(plugin, conn, def, rows[0] || null));
        else {
          for (const r of rows) box.append(streamWidget(plugin, conn, def, r));
          box.append(streamWidget(plugin, conn, def, null));
        }
      }
      root.append(box);
    }
  }

  async function refresh() {
    const [cat, conns] = await Promise.all([api("/plugins/catalog"), api("/connections")]);
    state.catalog = cat.plugins;
    state.byId = Object.fromEntries(cat.plugins.map((p) => [p.id, p]));
    state.connections = conns.connections;
    renderConnections();
    renderCatalog();
  }

  const back = { plugin: params.get("plugin"), error: params.get("error"), existing: params.get("existing") };
  if (params.get("connected")) toast("Connected");
  if (back.error && !(back.error === "account_exists" && back.existing)) toast(`Connection failed: ${back.error.replace(/_/g, " ")}`, true);
  ["connected", "error", "plugin", "connection", "existing"].forEach((k) => params.delete(k));
  history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
  refresh().then(() => {
    // The provider account of an OAuth / app-install return leg is connected already: offer to update it.
    if (back.error !== "account_exists" || !back.existing) return;
    const conn = state.connections.find((c) => c.id === back.existing);
    const plugin = state.byId[back.plugin];
    const label = conn ? conn.account_label : back.existing;
    toast(`Not connected: ${label} is already connected (${back.existing}).`, true,
      plugin ? { label: `Update ${label}`, run: () => openConnect(plugin, back.existing) } : null);
  }).catch((e) => { if (e.code !== "unauthorized") toast(e.message, true); });
})();
