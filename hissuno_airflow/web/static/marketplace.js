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
  const state = { catalog: [], loadErrors: [], byId: {}, connections: [], perPlugin: {}, page: { offset: 0, size: 25, total: 0, q: "" } };

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
    // A plugin whose module failed to import has no card; say so instead of leaving it silently missing.
    if (state.loadErrors.length) {
      root.append(el("p", { class: "load-errors error", role: "alert",
        text: `${state.loadErrors.join(", ")} failed to load (the server log says why); the other integrations work as usual.` }));
    }
    const groups = {};
    for (const p of state.catalog) (groups[p.category] = groups[p.category] || []).push(p);
    for (const [cat, plugins] of Object.entries(groups).sort()) {
      const cards = el("div", { class: "cards" });
      for (const p of plugins) {
        // Counted over every connection, not only the page shown.
        const connected = state.perPlugin[p.id] || 0;
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
    // No browser validation (its "Please match the requested format." names nothing): required fields are
    // marked, and the server's message lands under the field it names. Secrets are never filled in: on a
    // reconnect every field starts empty.
    $("#config-form").noValidate = true;
    for (const f of list) {
      const id = `cfg-${f.id}`;
      const hint = f.help_text ? el("span", { class: "help", id: `${id}-help`, text: f.help_text }) : null;
      const msg = el("span", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true });
      const input = el("input", { id, name: f.id, type: f.secret ? "password" : "text",
        placeholder: f.placeholder || "", "aria-required": f.required ? "true" : undefined,
        autocomplete: f.secret ? "new-password" : "off", "data-secret": f.secret ? "1" : undefined,
        "aria-describedby": [hint && hint.id, msg.id].filter(Boolean).join(" ") });
      fields.append(el("div", { class: "field", "data-field": f.id },
        el("label", { for: id }, f.label, f.required ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null,
          f.required ? el("span", { class: "sr-only", text: " (required)" }) : null),
        input, hint, msg));
    }
    if (list.some((f) => f.required)) fields.append(el("p", { class: "help", text: "* required" }));
    if (!list.length) fields.append(el("p", { class: "muted", text: `You will continue on ${plugin.name} to authorize access.` }));
    const form = $("#config-form");
    // Connecting an account that is connected already is refused (409 account_exists, naming the
    // connection); updating it is a second, explicit request naming that connection.
    const send = async (connectionId) => {
      const submit = $("#config-submit");
      submit.disabled = true;
      update.hidden = true;
      fields.querySelectorAll(".invalid").forEach((n) => { n.classList.remove("invalid"); n.removeAttribute("aria-invalid"); });
      fields.querySelectorAll(".field-error").forEach((n) => { n.hidden = true; n.textContent = ""; });
      $("#config-error").hidden = true;
      const credentials = {};
      for (const f of list) credentials[f.id] = form.elements[f.id].value;
      const missing = list.find((f) => f.required && !credentials[f.id].trim());
      if (missing) {
        fieldError(missing.id, `${missing.label} is required.`);
        submit.disabled = false;
        return;
      }
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
        const name = (e.field || "").replace(/^credentials\./, "");
        // On the field, the message need not repeat the field's path ("credentials.every_seconds: ...").
        if (name && form.elements[name]) { err.hidden = true; fieldError(name, e.message.replace(/^[\w.]+: /, "")); }
        else err.textContent = e.message;
      } finally {
        submit.disabled = false;
      }
    };
    function fieldError(name, message) {
      const input = form.elements[name];
      input.classList.add("invalid");
      input.setAttribute("aria-invalid", "true");
      const box = $(`#cfg-${CSS.escape(name)}-error`);
      box.textContent = message;
      box.hidden = false;
      input.focus();
    }
    $("#config-title").textContent = reconnectId ? `Reconnect ${plugin.name}` : `Connect ${plugin.name}`;
    $("#config-submit").textContent = reconnectId ? "Save" : "Connect";
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
      } else if (t.writeOnly || t.format === "password") {
        // A secret setting (pydantic SecretStr: writeOnly) is never filled back in.
        input = el("input", { type: "password", autocomplete: "new-password", placeholder: "" });
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

  // Times as Airflow shows them: UTC, plus how long ago (or how soon).
  function utc(t) {
    if (!t) return "";
    const d = new Date(t);
    return d.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
  function ago(t, now = Date.now()) {
    if (!t) return "";
    const s = Math.round((now - new Date(t).getTime()) / 1000);
    const a = Math.abs(s);
    const n = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
    return s >= 0 ? `${n} ago` : `in ${n}`;
  }
  function duration(sec) {
    if (sec === null || sec === undefined) return "";
    const s = Math.round(sec);
    return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }
  function countsText(c) {
    c = c || {};
    return ["found", "synced", "skipped", "failed"].map((k) => `${c[k] || 0} ${k}`).join(", ");
  }
  const LANE_WORD = { scheduled: "scheduled", manual: "manual", webhook: "webhook", backfill: "backfill" };

  function runLine(run) {
    const parts = [`${LANE_WORD[run.lane] || run.lane} run ${run.status === "in_progress" ? "running" : run.status}`,
      `${utc(run.started_at)} (${ago(run.started_at)})`, duration(run.duration_s) && `took ${duration(run.duration_s)}`,
      countsText(run.status === "in_progress" && run.progress ? run.progress.counts : run.counts)];
    if (run.error_message) parts.push(run.error_message);
    return parts.filter(Boolean).join(" · ");
  }

  // The live lane (scheduled, manual, webhook runs: what moves the cursor) and backfill windows are
  // shown apart: a backfill never hides the live state.
  function renderStatus(status, row) {
    status.replaceChildren();
    const live = el("div", { class: "s-live" });
    const next = el("div", { class: "s-next muted" });
    const backfill = el("div", { class: "s-backfill muted", hidden: true });
    status.append(live, next, backfill);
    if (!row) { live.textContent = "Not enabled"; status.className = "s-status status-none"; return; }
    const run = row.last_run;
    if (run) live.textContent = "Last " + runLine(run);
    else if (row.last_sync_status) live.textContent = `Last run ${row.last_sync_status} · ${countsText(row.last_sync_counts)}`;
    else live.textContent = row.enabled ? "Enabled · never synced" : "Disabled";
    if (!row.enabled && (run || row.last_sync_status)) live.textContent = "Disabled · " + live.textContent;
    status.className = "s-status status-" + ((run && run.status) || row.last_sync_status || "none");
    const nextBits = [];
    if (row.enabled && row.next_sync_at) nextBits.push(`Next run ${utc(row.next_sync_at)} (${ago(row.next_sync_at)})`);
    else if (row.enabled) nextBits.push(row.frequency === "manual" ? "Next run: when started by hand" : row.frequency === "webhook" ? "Next run: on the next webhook" : "");
    if (row.last_sync_at) nextBits.push(`cursor ${utc(row.last_sync_at)}`);
    next.textContent = nextBits.filter(Boolean).join(" · ");
    next.hidden = !next.textContent;
    if (row.last_backfill) {
      const b = row.last_backfill;
      backfill.textContent = `Backfill ${utc(b.window_start)} → ${utc(b.window_end)}: ${b.status === "in_progress" ? "running" : b.status}, ` +
        `${utc(b.started_at)} (${ago(b.started_at)}), ${countsText(b.status === "in_progress" && b.progress ? b.progress.counts : b.counts)}`;
      backfill.hidden = false;
    }
  }

  function streamWidget(plugin, conn, def, row) {
    const node = $("#stream-template").content.firstElementChild.cloneNode(true);
    node.dataset.stream = row ? row.stream_id : def.key;
    $(".s-label", node).textContent = def.label + (row && row.stream_id.includes(":") ? ` · ${row.stream_id.split(":").slice(1).join(":")}` : "");
    $(".s-kind", node).textContent = def.kind;
    $(".s-desc", node).textContent = def.description || "";
    const status = $(".s-status", node);
    const setStatus = (r) => renderStatus(status, r);
    setStatus(row);
    const fid = `s-${conn.id}-${(row ? row.stream_id : def.key).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    node.querySelectorAll("[data-id]").forEach((n) => { n.id = `${fid}-${n.dataset.id}`; });
    node.querySelectorAll("label[data-for]").forEach((n) => { n.htmlFor = `${fid}-${n.dataset.for}`; });
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
      // Asked for when the user comes to pick one (a page of connections would otherwise call every
      // provider's instance listing on each load).
      instanceSel.append(el("option", { value: "", text: "Choose…" }));
      let asked = false;
      const loadInstances = () => {
        if (asked) return;
        asked = true;
        instanceSel.replaceChildren(el("option", { value: "", text: "Loading…" }));
        api(`/plugins/${plugin.id}/${conn.id}/instances/${def.key}`).then((res) => {
          instanceSel.replaceChildren(...res.instances.map((i) => el("option", { value: i.id, text: i.label })));
        }).catch((e) => { instanceSel.replaceChildren(el("option", { value: "", text: e.message })); });
      };
      instanceSel.addEventListener("focus", loadInstances);
      instanceSel.addEventListener("pointerdown", loadInstances);
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
        set(0, "Starting sync…");
        const es = new EventSource(`${API}/plugins/${plugin.id}/${conn.id}/sync?stream_id=${encodeURIComponent(current.stream_id)}`);
        let done = false;
        let heard = false;
        let pct = 0;
        let total = null;
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
            if (!historyBox.hidden) showHistory().catch(() => {});
            return;
          }
          // The bar follows the records handled (synced, skipped or failed) against the total the
          // provider announced, else against what was found so far; it never runs backwards.
          const c = d.counts || {};
          if (d.total) total = Math.max(total || 0, d.total);
          const handled = (c.synced || 0) + (c.skipped || 0) + (c.failed || 0);
          const of = total || c.found || 0;
          if (of) pct = Math.max(pct, Math.min(99, (100 * handled) / of));
          const counts = of ? `${handled} of ${of} handled (${c.synced || 0} synced${c.skipped ? `, ${c.skipped} skipped` : ""}${c.failed ? `, ${c.failed} failed` : ""})` : "";
          set(pct, [d.type === "queued" ? d.message : "", counts].filter(Boolean).join(" · ") || d.message || d.type);
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
    const historyBox = $(".s-history-box", node);
    const laneSel = $(".s-lane", node);
    const statusSel = $(".s-run-status", node);
    const pager = { offset: 0, size: 10, seq: 0 };
    const uid = `h-${conn.id}-${(row ? row.stream_id : def.key).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    laneSel.id = `${uid}-lane`; $(".s-lane-label", node).htmlFor = laneSel.id;
    statusSel.id = `${uid}-status`; $(".s-run-status-label", node).htmlFor = statusSel.id;
    async function showHistory() {
      const q = new URLSearchParams({ limit: String(pager.size), offset: String(pager.offset), stream_id: current.stream_id });
      if (laneSel.value) q.set("lane", laneSel.value);
      if (statusSel.value) q.set("status", statusSel.value);
      const seq = ++pager.seq;
      const res = await api(`/plugins/${plugin.id}/${conn.id}/runs?${q}`);
      if (seq !== pager.seq) return;  // a later filter or page was asked for meanwhile: its answer wins
      $("tbody", history).replaceChildren(...res.runs.map((r) => {
        const c = (r.status === "in_progress" && r.progress ? r.progress.counts : r.counts) || {};
        const note = r.error_message || (r.window_start || r.window_end ? `${utc(r.window_start)} → ${utc(r.window_end)}` : "");
        const links = el("td", { class: "links" });
        if (r.links) {
          links.append(el("a", { href: r.links.run, target: "_top", text: "Run" }), " ",
            el("a", { href: r.links.log, target: "_top", text: "Log" }));
        }
        return el("tr", { class: "run status-" + r.status, "data-lane": r.lane },
          el("td", { text: utc(r.started_at), title: ago(r.started_at) }),
          ...[r.lane, r.status, duration(r.duration_s), c.found || 0, c.synced || 0, c.skipped || 0, c.failed || 0, note]
            .map((v) => el("td", { text: String(v) })), links);
      }));
      if (!res.runs.length) $("tbody", history).append(el("tr", {}, el("td", { colspan: "10", text: "No runs match" })));
      const last = Math.min(res.total, pager.offset + res.runs.length);
      $(".s-page-info", node).textContent = res.total ? `${pager.offset + 1}–${last} of ${res.total}` : "0 runs";
      $(".s-prev", node).disabled = pager.offset === 0;
      $(".s-next-page", node).disabled = last >= res.total;
      historyBox.hidden = false;
      history.hidden = false;
    }
    const reload = () => showHistory().catch((e) => toast(e.message, true));
    laneSel.addEventListener("change", () => { pager.offset = 0; reload(); });
    statusSel.addEventListener("change", () => { pager.offset = 0; reload(); });
    $(".s-prev", node).addEventListener("click", () => { pager.offset = Math.max(0, pager.offset - pager.size); reload(); });
    $(".s-next-page", node).addEventListener("click", () => { pager.offset += pager.size; reload(); });
    historyBtn.addEventListener("click", () => {
      if (!historyBox.hidden) { historyBox.hidden = true; historyBtn.setAttribute("aria-expanded", "false"); return; }
      historyBtn.setAttribute("aria-expanded", "true");
      reload();
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
    // The connection listing counts open failures: only a connection that has some asks for the list.
    if (conn.open_failed_records === 0) panel.textContent = "Failed records: none";
    else load().catch((e) => { panel.textContent = e.message; });
    return panel;
  }

  // Health at a glance: reconnect needed, rate-limited until, failing, or fine; the last error is redacted
  // by the server.
  const HEALTH = { reconnect_needed: "Reconnect needed", rate_limited: "Rate-limited", failing: "Failing", ok: "Healthy", idle: "No stream enabled" };
  function healthLine(conn) {
    const h = conn.health || { state: conn.needs_reconnect ? "reconnect_needed" : "ok" };
    let text = HEALTH[h.state] || h.state;
    if (h.state === "rate_limited" && h.rate_limited_until) text += ` until ${utc(h.rate_limited_until)} (${ago(h.rate_limited_until)})`;
    if (h.state === "failing") text += `: ${h.failing_streams.join(", ")}`;
    const box = el("div", { class: `health health-${h.state}`, "data-health": h.state },
      el("span", { class: "health-badge", text }));
    if (h.state === "reconnect_needed") box.classList.add("reconnect-needed");
    const err = h.last_error || (h.state === "reconnect_needed" ? conn.auth_error || "the provider refused the credentials" : "");
    if (err && h.state !== "ok") box.append(el("span", { class: "health-error", text: ` · last error: ${err}` }));
    return box;
  }

  // Connection settings: its name (the only thing of a connection a person edits; credentials change by
  // reconnecting) and what it is: plugin, provider account, where its credentials live, the provider's
  // settings (secret ones masked by the server), its webhook URL when the plugin takes webhooks.
  function openConnSettings(plugin, conn) {
    const dlg = $("#conn-dialog");
    const input = $("#conn-label");
    const msg = $("#conn-label-error");
    const reset = () => { msg.hidden = true; msg.textContent = ""; input.removeAttribute("aria-invalid"); input.classList.remove("invalid"); $("#conn-error").hidden = true; };
    reset();
    $("#conn-title").textContent = `${plugin.name} connection settings`;
    input.value = conn.account_label;
    const rows = [["Plugin", plugin.name], ["Provider account", conn.external_account_id], ["Connection id", conn.id],
      ["Credentials stored in", conn.stored_in === "airflow" ? "an Airflow Connection" : "the Hissuno store (encrypted)"],
      ["Connected", utc(conn.created_at)]];
    for (const [k, v] of Object.entries(conn.settings || {})) {
      if (v !== null && v !== undefined && v !== "") rows.push([k.replace(/_/g, " "), typeof v === "object" ? JSON.stringify(v) : String(v)]);
    }
    if (plugin.webhooks) {
      const path = `${API}/plugins/webhook/${plugin.id}` + (plugin.webhook_scope === "app" ? "" : `/${conn.id}`);
      rows.push([plugin.webhook_scope === "app" ? "Webhook URL (the app's, for every connection)" : "Webhook URL", new URL(path, location.href).href]);
    }
    $("#conn-details").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    $("#conn-cancel").onclick = () => dlg.close();
    $("#conn-form").onsubmit = async (ev) => {
      ev.preventDefault();
      reset();
      const label = input.value.trim();
      const fail = (text) => { msg.textContent = text; msg.hidden = false; input.setAttribute("aria-invalid", "true"); input.classList.add("invalid"); input.focus(); };
      if (!label) return fail("Name is required.");
      $("#conn-submit").disabled = true;
      try {
        await api(`/plugins/${plugin.id}/${conn.id}`, { method: "PATCH", json: { account_label: label } });
        dlg.close();
        toast(`Saved ${label}`);
        await refresh();
      } catch (e) {
        if (e.field === "account_label") fail(e.message.replace(/^account_label: /, "Name: "));
        else { $("#conn-error").textContent = e.message; $("#conn-error").hidden = false; }
      } finally {
        $("#conn-submit").disabled = false;
      }
    };
    dlg.showModal();
    input.focus();
  }

  function renderPager() {
    const p = state.page;
    const last = Math.min(p.total, p.offset + state.connections.length);
    $("#conn-page-info").textContent = p.total ? `${p.offset + 1}–${last} of ${p.total} connections` : "";
    $("#conn-prev").disabled = p.offset === 0;
    $("#conn-next").disabled = last >= p.total;
    $("#conn-pager").hidden = p.total <= p.size && !p.q;
  }

  function renderConnections() {
    const root = $("#connections");
    root.replaceChildren();
    $("#no-connections").hidden = state.connections.length > 0 || !!state.page.q;
    for (const conn of state.connections) {
      const plugin = state.byId[conn.plugin_id];
      if (!plugin) continue;
      const box = el("div", { class: "connection", "data-connection": conn.id },
        el("div", { class: "head" }, icon(plugin),
          el("div", { class: "grow" }, el("strong", { text: conn.account_label }),
            el("div", { class: "muted", text: `${plugin.name} · ${conn.external_account_id}` }),
            healthLine(conn)),
          el("button", { text: "Settings", "aria-label": `Settings of ${conn.account_label}`, onclick: () => openConnSettings(plugin, conn) }),
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
    // Connections come a page at a time (the page stays quick with a thousand of them).
    const p = state.page;
    const q = new URLSearchParams({ limit: String(p.size), offset: String(p.offset) });
    if (p.q) q.set("q", p.q);
    const [cat, conns] = await Promise.all([state.catalog.length ? { plugins: state.catalog } : api("/plugins/catalog"), api(`/connections?${q}`)]);
    state.catalog = cat.plugins;
    if (cat.load_errors) state.loadErrors = cat.load_errors;
    state.byId = Object.fromEntries(cat.plugins.map((p) => [p.id, p]));
    state.connections = conns.connections;
    p.total = conns.total;
    state.perPlugin = conns.per_plugin || {};
    renderConnections();
    renderPager();
    renderCatalog();
  }
  $("#conn-prev").addEventListener("click", () => { state.page.offset = Math.max(0, state.page.offset - state.page.size); refresh().catch((e) => toast(e.message, true)); });
  $("#conn-next").addEventListener("click", () => { state.page.offset += state.page.size; refresh().catch((e) => toast(e.message, true)); });
  $("#conn-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.page.q = new FormData(ev.target).get("q").trim();
    state.page.offset = 0;
    refresh().catch((e) => toast(e.message, true));
  });

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
