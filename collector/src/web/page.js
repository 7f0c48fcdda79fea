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

for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
$("search-form").addEventListener("submit", search);
$("graph-form").addEventListener("submit", drawGraph);
const initial = new URLSearchParams(location.search).get("host");
if (initial) { $("host").value = initial; search(); }
