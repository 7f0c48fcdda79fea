// whouses web page: plain JavaScript, no dependencies. Everything shown comes from the
// JSON API; every value is inserted as text (never as HTML) except the server-rendered,
// escaped graph SVG.
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = localStorage.getItem("whouses-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("whouses-token", tokenInput.value));

async function api(path) {
  const headers = {};
  if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
  const resp = await fetch(path, { headers });
  const text = await resp.text();
  if (!resp.ok) {
    let msg = text;
    try { msg = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
    throw new Error(resp.status + ": " + msg);
  }
  return text;
}

function showError(e) {
  const p = $("error");
  p.textContent = e ? String(e.message || e) : "";
  p.hidden = !e;
}

function relative(iso) {
  if (!iso) return "never";
  const ms = Date.now() - Date.parse(iso);
  const abs = Math.abs(ms), s = Math.floor(abs / 1000);
  if (s < 1) return "just now";
  const [n, unit] = s < 60 ? [s, "second"] : s < 3600 ? [Math.floor(s / 60), "minute"]
    : s < 86400 ? [Math.floor(s / 3600), "hour"] : [Math.floor(s / 86400), "day"];
  const t = n + " " + unit + (n === 1 ? "" : "s");
  return ms >= 0 ? t + " ago" : "in " + t;
}

function duration(ms) {
  return relative(new Date(Date.now() - ms).toISOString()).replace(" ago", "").replace("just now", "0 seconds");
}

// Build a table from column headers and rows of cell values (strings or {text, cls}).
function table(headers, rows, id) {
  const t = document.createElement("table");
  if (id) t.id = id;
  const head = t.createTHead().insertRow();
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of r) {
      const td = tr.insertCell();
      if (c !== null && typeof c === "object") { td.textContent = c.text; if (c.cls) td.className = c.cls; }
      else { td.textContent = String(c); if (typeof c === "number") td.className = "n"; }
    }
  }
  return t;
}

function fill(id, node) { const el = $(id); el.replaceChildren(node); }

async function search(ev) {
  if (ev) ev.preventDefault();
  showError(null);
  const host = $("host").value.trim();
  if (!host) return;
  const q = encodeURIComponent(host);
  try {
    const [callers, check] = await Promise.all([
      api("/v1/callers?host=" + q).then(JSON.parse),
      api("/v1/check?host=" + q + "&quiet_for=" + $("quiet").value).then(JSON.parse),
    ]);
    const v = $("verdict");
    v.hidden = false;
    v.className = "verdict " + check.verdict;
    v.textContent = check.verdict.toUpperCase() + " — " + check.reason;
    const unattributed = callers.unattributed || [];
    if (callers.callers.length === 0 && unattributed.length === 0) {
      const p = document.createElement("p");
      p.textContent = "No recorded callers of " + host + ".";
      fill("callers", p);
    } else {
      // Both sides of a call (issue 14): seen by the caller's sidecar, the callee's, or
      // both; addresses no sidecar holds are callers still to find.
      const rows = callers.callers.map((c) => [c.service, c.environment, c.requests, c.errors,
        relative(c.first_seen), relative(c.last_seen), c.hosts.join(" "), c.seen_by || "caller",
        (c.addresses || []).join(" "),
        c.around_sidecar ? { text: "around its sidecar", cls: "silent" } : ""]);
      for (const u of unattributed) {
        rows.push([{ text: "(unattributed)", cls: "silent" }, "", u.requests, u.errors,
          relative(u.first_seen), relative(u.last_seen), u.hosts.join(" "), "callee", u.address,
          (u.candidates || []).length ? "held by several: " + u.candidates.join(", ") : "no sidecar held this address"]);
      }
      fill("callers", table(
        ["service", "environment", "requests", "errors", "first seen", "last seen", "hosts",
          "seen by", "address", "note"],
        rows, "callers-table"));
    }
    const side = document.createElement("div");
    for (const c of check.callee_side || []) {
      const p = document.createElement("p");
      p.textContent = "Callee side: " + c.service + " (" + c.environment + "), " + c.instances.length +
        " inbound sidecar(s) — " + (c.reporting_through_window ? "reported throughout" : "did NOT report throughout") +
        ", last report " + relative(c.last_report) + ".";
      side.appendChild(p);
    }
    for (const d of check.disagreements || []) {
      const p = document.createElement("p");
      p.className = "silent";
      p.textContent = "Disagreement: " + d.message + ".";
      side.appendChild(p);
    }
    fill("callee-side", side);
  } catch (e) { showError(e); }
}

async function loadHosts() {
  try {
    const r = JSON.parse(await api("/v1/hosts"));
    fill("hosts", table(["host", "port", "callers", "requests", "errors", "last seen", "quiet for"],
      r.hosts.map((h) => [h.host, h.port, h.callers, h.requests, h.errors, relative(h.last_seen), duration(h.quiet_for_ms)]),
      "hosts-table"));
  } catch (e) { showError(e); }
}

async function loadServices() {
  try {
    const r = JSON.parse(await api("/v1/services"));
    const rows = [];
    for (const s of r.services) {
      for (const i of s.instances) {
        const late = Date.now() - Date.parse(i.last_report) > 3 * Math.max(i.flush_interval_ms, 1000) + 5000;
        rows.push([s.service, s.environment, i.instance, relative(i.first_report), relative(i.last_report),
          late ? { text: "silent", cls: "silent" } : "reporting"]);
      }
    }
    fill("services", table(["service", "environment", "instance", "first report", "last report", "health"], rows, "services-table"));
  } catch (e) { showError(e); }
}

async function drawGraph(ev) {
  if (ev) ev.preventDefault();
  showError(null);
  const params = new URLSearchParams();
  if ($("graph-host").value.trim()) params.set("host", $("graph-host").value.trim());
  if ($("graph-service").value.trim()) params.set("service", $("graph-service").value.trim());
  try {
    const svg = await api("/v1/graph.svg?" + params.toString());
    const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    fill("graph", document.importNode(doc.documentElement, true));
  } catch (e) { showError(e); }
}

async function loadCoverage() {
  try {
    const r = JSON.parse(await api("/v1/coverage"));
    fill("coverage", table(["host", "callee", "calls", "attributed", "share", "callers", "unattributed addresses", "last seen"],
      r.hosts.map((h) => [h.host, h.callee_services.join(" "), h.calls, h.attributed_calls,
        Math.round(h.attributed_share * 100) + "%", h.callers.join(" "),
        h.unattributed.map((u) => u.address + " (" + (u.requests + u.connections) + ")").join(" "),
        relative(h.last_seen)]),
      "coverage-table"));
  } catch (e) { showError(e); }
}

function show(view) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === view);
  for (const v of ["search", "hosts", "services", "graph", "coverage"]) $("view-" + v).hidden = v !== view;
  showError(null);
  if (view === "hosts") loadHosts();
  if (view === "services") loadServices();
  if (view === "coverage") loadCoverage();
  if (view === "graph") {
    if (!$("graph-host").value && $("host").value) $("graph-host").value = $("host").value;
    drawGraph();
  }
}

$("graph-form").addEventListener("submit", drawGraph);

// ---- Every view has its own URL, and the decommission workflow's views (issue 16) ----
// #/ (the dashboard), #/host/NAME?since=7d&step=1h, #/migration?from=OLD&to=NEW&since=30d,
// #/search?host=H&quiet_for=14d, #/hosts, #/services, #/graph, and any other view by its
// name. The old link form /?host=H still opens the search.

const WORKFLOW_VIEWS = ["dashboard", "host", "migration"];
let routeGeneration = 0;

function link(text, hash, id) {
  const a = document.createElement("a");
  a.href = hash;
  a.textContent = text;
  if (id) a.id = id;
  return a;
}

function hostLink(host) { return link(host, "#/host/" + encodeURIComponent(host)); }

function migrationHash(from, to, since) {
  const p = new URLSearchParams({ from, to });
  if (since) p.set("since", since);
  return "#/migration?" + p.toString();
}

// Cells for table(): text, numbers, or a node (a link) put in as is.
function nodeTable(headers, rows, id) {
  const t = table(headers, rows.map((r) => r.map((c) => (c instanceof Node ? "" : c))), id);
  const trs = t.tBodies[0].rows;
  rows.forEach((r, i) => r.forEach((c, j) => { if (c instanceof Node) trs[i].cells[j].replaceChildren(c); }));
  return t;
}

function paragraph(text, cls) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  return p;
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const q = h.indexOf("?");
  const path = q < 0 ? h : h.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params };
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function route() {
  const generation = ++routeGeneration;
  const current = () => generation === routeGeneration;
  const { parts, params } = parseHash();
  let view = parts[0] || "";
  if (!view) {
    const legacy = new URLSearchParams(location.search).get("host");
    view = legacy ? "search" : "dashboard";
    if (legacy && !params.get("host")) params.set("host", legacy);
  }
  const known = [...document.querySelectorAll("main > section")].map((s) => s.id.replace(/^view-/, ""));
  if (!known.includes(view)) view = "dashboard";
  show(view);
  for (const v of WORKFLOW_VIEWS) $("view-" + v).hidden = v !== view;
  if (view === "host") $("tab-dashboard").classList.add("active");
  if (view === "search" && params.get("host")) {
    $("host").value = params.get("host");
    if (params.get("quiet_for")) $("quiet").value = params.get("quiet_for");
    search();
  }
  if (view === "dashboard") loadDashboard(current);
  if (view === "host") loadHost(parts.slice(1).join("/"), params, current);
  if (view === "migration") loadMigration(params, current);
}

async function loadDashboard(current) {
  try {
    const d = JSON.parse(await api("/v1/dashboard"));
    if (!current()) return;
    const f = d.fleet;
    const fleet = $("fleet-health");
    fleet.textContent = f.reporting + " of " + f.instances + " instances reporting";
    fleet.className = "fleet " + (f.reporting < f.instances ? "degraded" : "healthy");
    fill("fleet-silent", f.silent.length === 0 ? paragraph("") : nodeTable(
      ["silent instance", "service", "environment", "last report"],
      f.silent.map((i) => [i.instance, i.service, i.environment, { text: relative(i.last_report), cls: "silent" }]),
      "silent-table"));

    const rows = [];
    for (const w of d.watches) {
      // A node goes in one cell only: a link of its own per row.
      const base = () => [String(w.id), hostLink(w.host), relative(w.from), w.note || ""];
      if (w.alerts.length === 0) rows.push([...base(), { text: "nothing fired", cls: "quiet" }, "", "", "", "", "", ""]);
      for (const a of w.alerts) {
        rows.push([...base(), { text: a.kind, cls: "kind-" + a.kind }, a.service + " (" + a.environment + ")",
          a.owner ? a.owner.team + (a.owner.contact ? " (" + a.owner.contact + ")" : "") : "",
          a.calls, a.errors, relative(a.last_seen), a.notifications + "×"]);
      }
    }
    fill("dash-watches", d.watches.length === 0
      ? paragraph("No watch yet: whouses watch add HOST --from now --notify URL", "hint")
      : nodeTable(["watch", "host", "cutoff", "note", "fired", "caller", "owner", "calls", "failing", "last call", "notified"],
        rows, "watches-table"));

    fill("dash-migrations", d.migrations.length === 0
      ? paragraph("No migration tracked: whouses watch add OLD --to NEW", "hint")
      : nodeTable(["from", "to", "cutoff", "progress", "not started", "migrating", "unknown", "done"],
        d.migrations.map((m) => [link(m.from + " → " + m.to, migrationHash(m.from, m.to)), hostLink(m.to), relative(m.cutoff),
          progress(m.summary), m.summary.not_started, m.summary.migrating, m.summary.unknown, m.summary.done]),
        "migrations-table"));

    fill("dash-quieting", d.quieting_hosts.length === 0
      ? paragraph("No host is going quiet.", "hint")
      : nodeTable(["host", "port", "calls, 7 days before", "calls, last 7 days", "last call", "callers"],
        d.quieting_hosts.map((h) => [hostLink(h.host), h.port, h.calls_prev_7d, h.calls_last_7d, relative(h.last_seen), h.callers]),
        "quieting-table"));
  } catch (e) { if (current()) showError(e); }
}

// A bar of a migration's callers by status (done first), as inline SVG.
function progress(s) {
  const total = s.done + s.migrating + s.not_started + s.unknown;
  const svg = svgEl("svg", { class: "progress", width: 160, height: 14, viewBox: "0 0 160 14", role: "img" });
  let x = 0;
  for (const [k, n] of [["done", s.done], ["migrating", s.migrating], ["unknown", s.unknown], ["not-started", s.not_started]]) {
    if (!n) continue;
    const w = (160 * n) / total;
    const r = svgEl("rect", { x, y: 0, width: w, height: 14, class: "status-" + k });
    r.appendChild(svgEl("title", {}, n + " " + k.replace("-", " ")));
    svg.appendChild(r);
    x += w;
  }
  svg.setAttribute("aria-label", s.done + " of " + total + " callers done");
  return svg;
}

function svgEl(name, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// One caller's calls (and failing calls, in red) per step, as an inline SVG bar chart.
function timelineChart(t, series, max) {
  const W = 600, H = 64, n = t.steps.length, bw = W / Math.max(n, 1);
  const svg = svgEl("svg", { class: "timeline-chart", width: W, height: H + 16, viewBox: "0 0 " + W + " " + (H + 16), role: "img",
    "data-service": series.service, "data-environment": series.environment,
    "aria-label": series.service + " (" + series.environment + "): " + series.total_calls + " calls, " + series.total_errors + " failing" });
  svg.appendChild(svgEl("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
  t.steps.forEach((step, i) => {
    const calls = series.calls[i] || 0, errors = series.errors[i] || 0;
    const h = calls ? Math.max(1, (H * calls) / max) : 0;
    const r = svgEl("rect", { x: i * bw + 0.5, y: H - h, width: Math.max(bw - 1, 0.5), height: h, class: "calls",
      "data-step": step, "data-calls": calls, "data-errors": errors });
    r.appendChild(svgEl("title", {}, step + ": " + calls + " calls, " + errors + " failing"));
    svg.appendChild(r);
    if (errors) {
      const eh = Math.max(1, (H * errors) / max);
      svg.appendChild(svgEl("rect", { x: i * bw + 0.5, y: H - eh, width: Math.max(bw - 1, 0.5), height: eh, class: "errors" }));
    }
  });
  if (n) {
    svg.appendChild(svgEl("text", { x: 0, y: H + 13, class: "tick" }, new Date(t.steps[0]).toISOString().slice(0, 16).replace("T", " ")));
    svg.appendChild(svgEl("text", { x: W, y: H + 13, class: "tick end" }, "now"));
  }
  return svg;
}

async function loadHost(host, params, current) {
  $("host-title").textContent = host;
  $("host-verdict").hidden = true;
  for (const id of ["host-callers", "host-timeline", "host-migrations"]) fill(id, paragraph("Loading…", "hint"));
  if (!host) return;
  const q = encodeURIComponent(host);
  const since = params.get("since") || "7d";
  const step = params.get("step") ? "&step=" + encodeURIComponent(params.get("step")) : "";
  try {
    const [callers, check, t, d] = await Promise.all([
      api("/v1/callers?host=" + q).then(JSON.parse),
      api("/v1/check?host=" + q + "&quiet_for=" + encodeURIComponent(params.get("quiet_for") || "14d")).then(JSON.parse),
      api("/v1/timeline?host=" + q + "&since=" + encodeURIComponent(since) + step).then(JSON.parse),
      api("/v1/dashboard").then(JSON.parse),
    ]);
    if (!current()) return;
    const v = $("host-verdict");
    v.hidden = false;
    v.className = "verdict " + check.verdict;
    v.textContent = check.verdict.toUpperCase() + " — " + check.reason;
    fill("host-callers", callers.callers.length === 0 ? paragraph("No recorded callers of " + host + ".") : table(
      ["service", "environment", "owner", "requests", "errors", "first seen", "last seen"],
      callers.callers.map((c) => [c.service, c.environment, c.owner ? c.owner.team : "", c.requests, c.errors,
        relative(c.first_seen), relative(c.last_seen)]),
      "host-callers-table"));

    $("host-timeline-title").textContent = "Calls per " + (t.step === "1d" ? "day" : "hour") + ", per caller, since " + relative(t.since);
    const box = document.createElement("div");
    const max = Math.max(1, ...t.callers.flatMap((s) => s.calls));
    for (const s of t.callers) {
      const row = document.createElement("div");
      row.className = "timeline-row";
      row.appendChild(paragraph(s.service + " (" + s.environment + ")" + (s.owner ? " — " + s.owner.team : "") +
        ": " + s.total_calls + " calls, " + s.total_errors + " failing", "timeline-label"));
      row.appendChild(timelineChart(t, s, max));
      box.appendChild(row);
    }
    if (t.callers.length === 0) box.appendChild(paragraph("No calls in the window.", "hint"));
    if (t.more_callers) box.appendChild(paragraph("…and " + t.more_callers + " more callers.", "hint"));
    fill("host-timeline", box);

    const mine = d.migrations.filter((m) => m.from === host || m.to === host);
    fill("host-migrations", mine.length === 0
      ? paragraph("No migration tracked for " + host + " (whouses watch add " + host + " --to NEW).", "hint")
      : nodeTable(["migration", "cutoff", "progress", "not started", "migrating", "unknown", "done"],
        mine.map((m) => [link(m.from + " → " + m.to, migrationHash(m.from, m.to)), relative(m.cutoff), progress(m.summary),
          m.summary.not_started, m.summary.migrating, m.summary.unknown, m.summary.done]),
        "host-migrations-table"));
  } catch (e) { if (current()) showError(e); }
}

async function loadMigration(params, current) {
  const from = params.get("from") || "", to = params.get("to") || "";
  $("migration-from").value = from;
  $("migration-to").value = to;
  const since = params.get("since") || $("migration-since").value;
  if (![...$("migration-since").options].some((o) => o.value === since)) {
    const o = document.createElement("option");
    o.value = since;
    o.textContent = since;
    $("migration-since").appendChild(o);
  }
  $("migration-since").value = since;
  $("migration-summary").textContent = "";
  fill("migration-callers", paragraph(from && to ? "Loading…" : "Name the old and the new host.", "hint"));
  $("migration-checklist").textContent = "";
  if (!from || !to) return;
  const q = "/v1/migration?" + new URLSearchParams({ from, to, since }).toString();
  try {
    const [m, md] = await Promise.all([api(q).then(JSON.parse), api(q + "&format=markdown")]);
    if (!current()) return;
    const s = m.summary;
    $("migration-summary").textContent = from + " → " + to + ": " + s.not_started + " not started, " + s.migrating +
      " migrating, " + s.unknown + " unknown, " + s.done + " done";
    fill("migration-callers", nodeTable(
      ["service", "environment", "owner", "status", "calls to old", "calls to new", "share on new", "last call to old", "why"],
      m.callers.map((c) => [c.service, c.environment, c.owner ? c.owner.team + (c.owner.contact ? " (" + c.owner.contact + ")" : "") : "",
        { text: c.status.replace("-", " "), cls: "status status-" + c.status }, c.calls_old, c.calls_new,
        c.share_new === null || c.share_new === undefined ? "—" : Math.round(c.share_new * 100) + "%",
        relative(c.last_old), c.reason]),
      "migration-table"));
    $("migration-checklist").textContent = md;
  } catch (e) { if (current()) showError(e); }
}

for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => {
    const v = b.dataset.view;
    if (v === "search" && $("host").value.trim()) {
      go("#/search?" + new URLSearchParams({ host: $("host").value.trim(), quiet_for: $("quiet").value }).toString());
    } else if (v === "migration" && $("migration-from").value && $("migration-to").value) {
      go(migrationHash($("migration-from").value.trim(), $("migration-to").value.trim(), $("migration-since").value));
    } else {
      go("#/" + (v === "dashboard" ? "" : v));
    }
  });
}
$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const host = $("host").value.trim();
  if (host) go("#/search?" + new URLSearchParams({ host, quiet_for: $("quiet").value }).toString());
});
$("migration-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go(migrationHash($("migration-from").value.trim(), $("migration-to").value.trim(), $("migration-since").value));
});
window.addEventListener("hashchange", route);
route();
