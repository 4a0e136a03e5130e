// The Integrations page's search box: GET {api}/search and render each hit readably.
(function () {
  "use strict";
  const form = document.getElementById("search-form");
  if (!form) return;
  const api = document.body.dataset.api;
  const list = document.getElementById("search-results");
  const status = document.getElementById("search-status");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Snippets mark matching words with «…»: shown as <mark>, built from text nodes (never innerHTML).
  function snippet(text) {
    const p = el("p", "search-snippet");
    String(text || "").split(/(«[^»]*»)/).forEach(function (part) {
      if (part.startsWith("«") && part.endsWith("»")) p.appendChild(el("mark", "", part.slice(1, -1)));
      else if (part) p.appendChild(document.createTextNode(part));
    });
    return p;
  }

  function render(body) {
    list.replaceChildren();
    body.results.forEach(function (hit) {
      const li = el("li", "search-hit");
      const head = el("div", "search-head");
      head.appendChild(el("span", "badge", hit.kind));
      if (hit.url && /^https?:\/\//.test(hit.url)) {
        const a = el("a", "search-title", hit.title);
        a.href = hit.url; a.target = "_blank"; a.rel = "noopener noreferrer";
        head.appendChild(a);
      } else {
        head.appendChild(el("strong", "search-title", hit.title));
      }
      head.appendChild(el("span", "muted", " score " + Number(hit.score).toFixed(4)));
      li.appendChild(head);
      const source = [hit.plugin_id, hit.connection_label || hit.connection_id, hit.external_id]
        .filter(Boolean).join(" · ");
      li.appendChild(el("div", "muted search-source", source || "no source connection"));
      li.appendChild(snippet(hit.snippet));
      list.appendChild(li);
    });
    status.hidden = false;
    status.textContent = body.results.length ? body.results.length + " results" : "No results";
    if (body.reembedding_pending) status.textContent += " (" + body.reembedding_pending + " records still being embedded)";
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    const params = new URLSearchParams({ q: document.getElementById("search-q").value });
    const kind = document.getElementById("search-kind").value;
    if (kind) params.append("kind", kind);
    status.hidden = false; status.textContent = "Searching…";
    fetch(api + "/search?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (res) {
        if (!res.ok) { list.replaceChildren(); status.textContent = res.body.message || "Search failed"; return; }
        render(res.body);
      })
      .catch(function () { status.textContent = "Search failed"; });
  });
})();
