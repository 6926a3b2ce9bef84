// jobtrail dashboard: plain JavaScript, no framework, no other host. Every figure comes from the
// /v1 API with the API key the operator typed in, kept in this tab's sessionStorage and sent as
// "Authorization: Bearer". Text from the API is only ever set with textContent (never as HTML).
"use strict";

const KEY = "jobtrail.key";
const TENANT = "jobtrail.tenant";
const POLL_MS = 3000;
const STATUSES = ["PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SVG = "http://www.w3.org/2000/svg";

let timer = null; // the overview's poll
let generation = 0; // bumped on every navigation: late answers of an old page are dropped

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function announce(message) {
  document.getElementById("announce").textContent = message;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Accept: "application/json", Authorization: "Bearer " + key };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "omit",
    cache: "no-store",
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    throw new Unauthorized((body && body.detail) || "the API key was refused");
  }
  return { status: response.status, ok: response.ok, body };
}

function problemText(answer) {
  const b = answer.body || {};
  return `${answer.status} ${b.title || ""}: ${b.detail || ""}`.trim();
}

// ---- navigation ------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

function setCurrent(name) {
  for (const id of ["nav-overview", "nav-jobs"]) {
    const link = document.getElementById(id);
    if (id === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render() {
  generation += 1;
  if (timer) { clearTimeout(timer); timer = null; }
  const main = document.getElementById("main");
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("logout").hidden = !signedIn;
  document.querySelector("nav").hidden = !signedIn;
  if (!signedIn) { setCurrent(null); return showLogin(main); }
  const tenant = sessionStorage.getItem(TENANT);
  document.getElementById("who").textContent = tenant ? "tenant " + tenant : "";
  const { path, params } = route();
  try {
    if (path === "/" || path === "/overview") { setCurrent("nav-overview"); await showOverview(main); }
    else if (path === "/jobs") { setCurrent("nav-jobs"); await showJobs(main, params); }
    else if (path.startsWith("/job/")) { setCurrent("nav-jobs"); await showJob(main, decodeURIComponent(path.slice(5)), params); }
    else { main.replaceChildren(h("h1", { text: "Not found" }), h("p", { text: "No such page." })); }
  } catch (err) {
    if (err instanceof Unauthorized) return showLogin(main, err.message);
    main.replaceChildren(h("h1", { text: "Error" }), h("p", { class: "error", role: "alert", text: String(err.message || err) }));
  }
}

function page(main, title, ...children) {
  document.title = title + " · jobtrail";
  main.replaceChildren(h("h1", { id: "page-title", text: title }), ...children);
}

// ---- sign in -----------------------------------------------------------------------------------

function showLogin(main, message) {
  document.getElementById("logout").hidden = true;
  document.querySelector("nav").hidden = true;
  document.getElementById("who").textContent = "";
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, spellcheck: "false", "aria-describedby": "key-help" });
  const error = h("p", { id: "login-error", class: "error", role: "alert", text: message || "" });
  const form = h("form", { class: "login", "aria-labelledby": "page-title" },
    h("label", { for: "api-key", text: "API key" }),
    input,
    h("p", { id: "key-help", class: "muted", text: "Paste a key made with `jobtrail keys create` (read scope at least). It is kept in this tab only and sent with each request to this server." }),
    error,
    h("button", { type: "submit", class: "primary", id: "sign-in", text: "Sign in" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      const answer = await api("/v1/overview");
      if (!answer.ok) { sessionStorage.removeItem(KEY); error.textContent = problemText(answer); return; }
      sessionStorage.setItem(TENANT, answer.body.tenant);
      if (!location.hash || location.hash === "#/login") location.hash = "#/";
      else render();
    } catch (err) {
      error.textContent = err instanceof Unauthorized ? "The key was refused (401): " + err.message : "Signing in failed: " + err.message;
      input.focus();
    }
  });
  page(main, "Sign in", form);
  input.focus();
}

// ---- overview ---------------------------------------------------------------------------------

async function showOverview(main) {
  const mine = generation;
  const counts = h("dl", { class: "cards", id: "status-counts" });
  const types = h("tbody");
  const chart = h("div", { class: "chart", id: "chart" });
  const lag = h("dl", { class: "facts", id: "lag" });
  const letters = h("section", { class: "panel", id: "dead-letters", "aria-labelledby": "dl-title", hidden: true });
  const updated = h("p", { class: "muted", id: "updated" });
  page(main, "Overview",
    updated,
    h("section", { class: "panel", "aria-labelledby": "counts-title" }, h("h2", { id: "counts-title", text: "Jobs by status" }), counts),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "types-title" },
        h("h2", { id: "types-title", text: "Jobs by type" }),
        h("table", { id: "type-counts" }, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Type" }), h("th", { scope: "col", class: "num", text: "Jobs in the projection" }))), types)),
      h("section", { class: "panel", "aria-labelledby": "lag-title" },
        h("h2", { id: "lag-title", text: "Lag" }), lag,
        h("p", { class: "muted", text: "Events of the log the relay has not published and the projection has not applied to Redis yet." }))),
    h("section", { class: "panel", "aria-labelledby": "chart-title" }, h("h2", { id: "chart-title", text: "Last 15 minutes" }), chart),
    letters);

  async function poll() {
    if (document.hidden) { timer = setTimeout(() => poll().catch(onPollError), POLL_MS); return; } // a hidden tab asks nothing
    const answer = await api("/v1/overview");
    if (mine !== generation) return;
    if (!answer.ok) { updated.textContent = "Could not refresh: " + problemText(answer); }
    else fill(answer.body);
    timer = setTimeout(() => poll().catch(onPollError), POLL_MS);
  }
  function onPollError(err) {
    if (err instanceof Unauthorized) return showLogin(main, err.message);
    if (mine === generation) {
      updated.textContent = "Could not refresh (" + err.message + "); retrying";
      timer = setTimeout(() => poll().catch(onPollError), POLL_MS);
    }
  }
  function fill(o) {
    document.getElementById("who").textContent = "tenant " + o.tenant;
    updated.textContent = "Updated " + when(o.at) + " (refreshes every " + POLL_MS / 1000 + " s)";
    counts.replaceChildren(...STATUSES.map((st) =>
      h("div", {}, h("dt", { text: st }), h("dd", { id: "count-" + st, class: "s-" + st, text: String(o.statuses[st] || 0) }))));
    const names = Object.keys(o.types).sort();
    types.replaceChildren(...(names.length ? names.map((n) => h("tr", { "data-type": n }, h("td", {}, h("code", { text: n })), h("td", { class: "num", text: String(o.types[n]) })))
      : [h("tr", {}, h("td", { colspan: 2, class: "muted", text: "No jobs yet." }))]));
    if (o.lag) {
      lag.replaceChildren(
        h("dt", { text: "Relay" }), h("dd", { id: "lag-relay", text: o.lag.relay_events + " events" }),
        h("dt", { text: "Projection" }), h("dd", { id: "lag-projection", text: o.lag.projection_events + " events" }));
    } else lag.replaceChildren(h("dt", { text: "Lag" }), h("dd", { class: "error", text: "unavailable" }));
    drawChart(chart, o.minutes, o.partial);
    if (o.dead_letters) {
      letters.hidden = false;
      const d = o.dead_letters;
      letters.replaceChildren(h("h2", { id: "dl-title", text: "Dead letters" }),
        h("p", {}, h("strong", { id: "dead-letter-count", text: String(d.recorded_24h) }), " recorded in the last 24 hours",
          d.newest_at ? " (newest " + when(d.newest_at) + ")" : "", ". List them with ", h("code", { text: "jobtrail dlq recorded" }), "."));
    } else letters.hidden = true;
  }
  await poll().catch(onPollError);
}

function drawChart(box, minutes, partial) {
  const W = 720, H = 200, left = 40, bottom = 24, top = 10, right = 10;
  const top_ = Math.max(1, ...minutes.map((m) => Math.max(m.completed, m.failed + m.attempts_failed)));
  const slot = (W - left - right) / minutes.length;
  const y = (v) => H - bottom - (v / top_) * (H - top - bottom);
  const total = minutes.reduce((a, m) => a + m.completed + m.failed, 0);
  const failed = minutes.reduce((a, m) => a + m.failed, 0);
  const rate = total ? ((100 * failed) / total).toFixed(1) : "0.0";
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-desc" });
  const desc = s("title", { id: "chart-desc" });
  desc.textContent = `Jobs completed and failed per minute over the last ${minutes.length} minutes: ${total - failed} completed, ${failed} failed (failure rate ${rate}%).`;
  svg.append(desc);
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(top_ * frac);
    svg.append(s("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), stroke: "#c8c8c8" }));
    const label = s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#4a4a4a" });
    label.textContent = String(v);
    svg.append(label);
  }
  minutes.forEach((m, i) => {
    const x = left + i * slot + 2, w = (slot - 4) / 2;
    svg.append(s("rect", { x, y: y(m.completed), width: w, height: H - bottom - y(m.completed), fill: "#146c2e" }));
    const stackBase = y(m.failed);
    svg.append(s("rect", { x: x + w, y: stackBase, width: w, height: H - bottom - stackBase, fill: "#b3261e" }));
    const ya = y(m.failed + m.attempts_failed);
    svg.append(s("rect", { x: x + w, y: ya, width: w, height: stackBase - ya, fill: "#b06000" }));
    if (i % 3 === minutes.length % 3 || i === minutes.length - 1) {
      const t = s("text", { x: x + w, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#4a4a4a" });
      t.textContent = new Date(m.minute).toISOString().slice(11, 16);
      svg.append(t);
    }
  });
  const legend = h("div", { class: "legend" },
    h("span", {}, h("span", { class: "swatch sw-completed" }), "completed"),
    h("span", {}, h("span", { class: "swatch sw-failed" }), "failed for good"),
    h("span", {}, h("span", { class: "swatch sw-attempts" }), "failed attempts (retried)"));
  const summary = h("p", { id: "throughput" },
    h("strong", { text: `${(total / minutes.length).toFixed(1)} jobs/min` }), ` finished on average; failure rate ${rate}%`,
    partial ? " (read from the newest events of the log only)" : "");
  const table = h("details", {}, h("summary", { text: "Show as a table" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["Minute (UTC)", "Completed", "Failed", "Failed attempts"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, minutes.map((m) => h("tr", {}, h("td", { text: new Date(m.minute).toISOString().slice(11, 16) }),
        h("td", { class: "num", text: m.completed }), h("td", { class: "num", text: m.failed }), h("td", { class: "num", text: m.attempts_failed }))))));
  const open = box.querySelector("details") && box.querySelector("details").open;
  box.replaceChildren(summary, svg, legend, table);
  if (open) table.open = true;
}

// ---- jobs -------------------------------------------------------------------------------------

function isoOf(local) {
  if (!local) return "";
  const d = new Date(local);
  return isNaN(d) ? "" : d.toISOString();
}

function localOf(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function showJobs(main, params) {
  const mine = generation;
  const field = (id, label, control) => h("label", { for: id }, label, control);
  const status = h("select", { id: "f-status", name: "status" }, h("option", { value: "", text: "any" }), STATUSES.map((st) => h("option", { value: st, text: st })));
  status.value = params.get("status") || "";
  const type = h("input", { id: "f-type", name: "type", value: params.get("type") || "", size: 14, maxlength: 128 });
  const since = h("input", { id: "f-since", type: "datetime-local", value: localOf(params.get("since")) });
  const until = h("input", { id: "f-until", type: "datetime-local", value: localOf(params.get("until")) });
  const search = h("input", { id: "f-search", name: "q", value: params.get("q") || "", size: 38, maxlength: 256, placeholder: "job id or idempotency key" });
  const limit = Math.min(Math.max(parseInt(params.get("limit") || "25", 10) || 25, 1), 500);
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("f-status", "Status", status), field("f-type", "Type", type), field("f-since", "Created from", since),
    field("f-until", "Created before", until), field("f-search", "Job id or idempotency key", search),
    h("button", { type: "submit", class: "primary", text: "Apply" }),
    h("button", { type: "button", id: "f-clear", text: "Clear", onclick: () => { location.hash = "#/jobs"; } }));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (type.value.trim()) q.set("type", type.value.trim());
    if (since.value) q.set("since", isoOf(since.value));
    if (until.value) q.set("until", isoOf(until.value));
    if (search.value.trim()) q.set("q", search.value.trim());
    location.hash = "#/jobs?" + q.toString();
  });

  const tbody = h("tbody");
  const all = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every job on this page" });
  const table = h("table", { id: "jobs-table", "aria-describedby": "jobs-caption" },
    h("caption", { id: "jobs-caption", class: "sr-only", text: "Jobs, newest first" }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, all),
      ["Job", "Type", "Status", "Attempt", "Created", "Updated", "Worker"].map((t) => h("th", { scope: "col", text: t })))),
    tbody);
  const result = h("div", { id: "bulk-result", role: "status", "aria-live": "polite" });
  const cancelButton = h("button", { type: "button", id: "bulk-cancel", class: "danger", disabled: true, text: "Cancel selected…" });
  const requeueButton = h("button", { type: "button", id: "bulk-requeue", disabled: true, text: "Requeue selected…" });
  const selectedInfo = h("span", { id: "selected-count", class: "muted", text: "0 selected" });
  const older = h("button", { type: "button", id: "older", disabled: true, text: "Older →" });
  const newer = h("button", { type: "button", id: "newer", disabled: true, text: "← Newer" });
  const pageInfo = h("span", { class: "muted", id: "page-info" });
  page(main, "Jobs", filters,
    h("div", { class: "toolbar" }, cancelButton, requeueButton, selectedInfo),
    result, table,
    h("div", { class: "toolbar" }, newer, pageInfo, older));

  const cursors = [null]; // cursors[i]: where page i starts
  let index = 0;
  const selected = () => [...tbody.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  function refreshSelection() {
    const n = selected().length;
    selectedInfo.textContent = n + " selected";
    cancelButton.disabled = requeueButton.disabled = n === 0;
  }
  all.addEventListener("change", () => { tbody.querySelectorAll("input[type=checkbox]").forEach((c) => { c.checked = all.checked; }); refreshSelection(); });

  async function load() {
    all.checked = false;
    let jobs = [], next = null;
    const q = (params.get("q") || "").trim();
    if (q && UUID_RE.test(q)) {
      const answer = await api("/v1/jobs/" + encodeURIComponent(q));
      if (answer.ok) jobs = [answer.body];
      else if (answer.status !== 404) throw new Error(problemText(answer));
    } else {
      const query = new URLSearchParams({ limit: String(limit) });
      for (const k of ["status", "type", "since", "until"]) if (params.get(k)) query.set(k, params.get(k));
      if (q) query.set("idempotency_key", q);
      if (cursors[index]) query.set("cursor", cursors[index]);
      const answer = await api("/v1/jobs?" + query.toString());
      if (!answer.ok) throw new Error(problemText(answer));
      jobs = answer.body.jobs; next = answer.body.next_cursor;
    }
    if (mine !== generation) return;
    cursors[index + 1] = next;
    tbody.replaceChildren(...(jobs.length ? jobs.map(row) : [h("tr", {}, h("td", { colspan: 8, class: "muted", text: "No job matches." }))]));
    older.disabled = !next; newer.disabled = index === 0;
    pageInfo.textContent = `page ${index + 1}, ${jobs.length} job(s)`;
    refreshSelection();
  }
  function row(job) {
    const box = h("input", { type: "checkbox", value: job.id, "aria-label": "Select job " + job.id, onchange: refreshSelection });
    return h("tr", { "data-id": job.id, "data-status": job.status },
      h("td", {}, box),
      h("td", {}, h("a", { href: "#/job/" + job.id, class: "mono", text: job.id })),
      h("td", {}, h("code", { text: job.type })),
      h("td", {}, h("span", { class: "badge s-" + job.status, text: job.status })),
      h("td", { class: "num", text: `${job.attempt}/${job.max_attempts}` }),
      h("td", { text: when(job.created_at) }), h("td", { text: when(job.updated_at) }),
      h("td", { class: "mono", text: job.worker || "" }));
  }
  older.addEventListener("click", () => { index += 1; load().catch(show); });
  newer.addEventListener("click", () => { index = Math.max(0, index - 1); load().catch(show); });
  function show(err) { if (err instanceof Unauthorized) return showLogin(main, err.message); result.replaceChildren(h("p", { class: "error", role: "alert", text: String(err.message || err) })); }

  async function bulk(action) {
    const ids = selected();
    if (!ids.length) return;
    const reason = await confirmDialog(action, ids.length);
    if (reason === null) return;
    const body = { ids };
    if (reason) body.reason = reason;
    const answer = await api("/v1/bulk/" + action, { method: "POST", body });
    if (!answer.ok) { result.replaceChildren(h("p", { class: "error", role: "alert", text: problemText(answer) })); return; }
    const done = answer.body.items.filter((i) => i.ok).length;
    const failed = answer.body.items.filter((i) => !i.ok);
    const verb = action === "cancel" ? "Cancelled (or asked to stop)" : "Requeued";
    result.replaceChildren(h("p", { class: done ? "ok" : "error", text: `${verb}: ${done} of ${ids.length} job(s), recorded as ${answer.body.actor}.` }),
      failed.length ? h("ul", {}, failed.map((i) => h("li", {}, h("code", { text: i.id }), ": " + i.error))) : "");
    announce(`${verb} ${done} of ${ids.length} jobs`);
    await load();
  }
  cancelButton.addEventListener("click", () => bulk("cancel").catch(show));
  requeueButton.addEventListener("click", () => bulk("requeue").catch(show));
  await load();
}

function confirmDialog(action, count) {
  const dialog = document.getElementById("confirm");
  const reason = document.getElementById("confirm-reason");
  const error = document.getElementById("confirm-error");
  const ok = document.getElementById("confirm-ok");
  const needsReason = action === "requeue";
  document.getElementById("confirm-title").textContent = action === "cancel" ? "Cancel jobs" : "Requeue failed jobs";
  document.getElementById("confirm-text").textContent = action === "cancel"
    ? `Cancel ${count} job(s)? A running job is asked to stop; a job that already ended is left as it is. Your key is recorded as the actor.`
    : `Give ${count} FAILED job(s) one more attempt each? Jobs that are not FAILED are left as they are. Your key and the reason are recorded.`;
  document.getElementById("confirm-reason-label").textContent = needsReason ? "Reason (required, recorded in each job's history)" : "Reason (optional, recorded in each job's history)";
  reason.setAttribute("aria-required", needsReason ? "true" : "false"); // checked below, with a message
  reason.value = "";
  error.textContent = "";
  ok.textContent = action === "cancel" ? `Cancel ${count} job(s)` : `Requeue ${count} job(s)`;
  return new Promise((resolve) => {
    const form = document.getElementById("confirm-form");
    const back = document.getElementById("confirm-back");
    function finish(value) {
      form.removeEventListener("submit", submit);
      back.removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) dialog.close();
      resolve(value);
    }
    function submit(event) {
      event.preventDefault();
      const text = reason.value.trim();
      if (needsReason && !text) { error.textContent = "Say why the jobs run again."; reason.focus(); return; }
      finish(text);
    }
    function cancel(event) { if (event) event.preventDefault(); finish(null); }
    form.addEventListener("submit", submit);
    back.addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
    reason.focus();
  });
}

// ---- one job ----------------------------------------------------------------------------------

const ATTEMPT_END = { Completed: "completed", AttemptFailed: "failed, retried", Failed: "failed", LeaseExpired: "lease expired", Cancelled: "cancelled" };

function attemptsOf(events) {
  const attempts = new Map();
  for (const e of events) {
    const n = e.data.attempt;
    if (e.event_type === "Started") attempts.set(n, { attempt: n, worker: e.data.worker_id, started: e.timestamp, outcome: "running", error: "" });
    else if (ATTEMPT_END[e.event_type] && attempts.has(n)) {
      const a = attempts.get(n);
      if (a.outcome === "running") {
        a.outcome = ATTEMPT_END[e.event_type];
        a.ended = e.timestamp;
        a.error = e.data.error_message || "";
      }
    }
  }
  return [...attempts.values()].sort((a, b) => a.attempt - b.attempt);
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

async function showJob(main, id, params) {
  const mine = generation;
  if (!UUID_RE.test(id)) {
    return page(main, "Job not found", h("p", { id: "job-missing", class: "error", role: "alert", text: "404: not a job id." }));
  }
  const [job, events, verified] = await Promise.all([
    api("/v1/jobs/" + id), api(`/v1/jobs/${id}/events`), api(`/v1/jobs/${id}/verify`)]);
  if (mine !== generation) return;
  if (job.status === 404 || events.status === 404) {
    return page(main, "Job not found", h("p", { id: "job-missing", class: "error", role: "alert", text: `404: no job ${id} in this tenant.` }),
      h("p", {}, h("a", { href: "#/jobs", text: "Back to the jobs" })));
  }
  if (!job.ok) throw new Error(problemText(job));
  if (!events.ok) throw new Error(problemText(events));
  const j = job.body, history = events.body;
  const showError = Boolean(j.error) && j.status !== "COMPLETED"; // a retried error stays on the job
  const submitted = history.find((e) => e.event_type === "Submitted");
  const traces = [...new Set(history.map((e) => e.trace_id || e.data.trace_id).filter(Boolean))];
  const facts = h("dl", { class: "facts", id: "job-facts" },
    h("dt", { text: "Id" }), h("dd", { class: "mono", text: j.id }),
    h("dt", { text: "Type" }), h("dd", {}, h("code", { text: j.type })),
    h("dt", { text: "Status" }), h("dd", {}, h("span", { id: "job-status", class: "badge s-" + j.status, text: j.status })),
    h("dt", { text: "Attempts" }), h("dd", { text: `${j.attempt} of ${j.max_attempts}` }),
    h("dt", { text: "Queue, priority" }), h("dd", { text: `${j.queue}, ${j.priority}` }),
    h("dt", { text: "Created" }), h("dd", { text: when(j.created_at) }),
    h("dt", { text: "Updated" }), h("dd", { text: when(j.updated_at) }),
    h("dt", { text: "Idempotency key" }), h("dd", { class: "mono", text: (submitted && submitted.data.idempotency_key) || "none" }),
    h("dt", { text: "Trace" }), h("dd", { id: "job-trace", class: "mono", text: traces.length ? traces.join(", ") : "none recorded" }));
  const verification = h("div", { id: "verification" });
  if (verified.ok) {
    const v = verified.body;
    verification.append(h("p", { class: v.ok ? "ok" : "error", id: "verify-result", text: v.ok
      ? `Hash chain intact: ${v.events} event(s) recomputed.` : `Hash chain broken: ${v.problems.length} problem(s).` }),
      h("p", { class: "muted", text: v.checkpointed ? `A checkpoint of the log covers its newest event (notification ${v.last_notification_id}).`
        : `No checkpoint covers its newest event (notification ${v.last_notification_id}) yet.` }),
      v.problems.length ? h("ul", {}, v.problems.map((p) => h("li", { text: `[${p.kind}] version ${p.version ?? "?"}: ${p.detail}` }))) : "");
  } else if (verified.status === 403) {
    verification.append(h("p", { class: "muted", id: "verify-result", text: "Verification needs a key with the audit scope." }));
  } else verification.append(h("p", { class: "error", id: "verify-result", text: problemText(verified) }));

  const attempts = attemptsOf(history);
  const attemptsTable = h("table", { id: "attempts" },
    h("thead", {}, h("tr", {}, ["Attempt", "Worker", "Started", "Ended", "Outcome", "Error"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, attempts.length ? attempts.map((a) => h("tr", { "data-attempt": a.attempt },
      h("td", { class: "num", text: a.attempt }), h("td", { class: "mono", text: a.worker }), h("td", { text: when(a.started) }),
      h("td", { text: when(a.ended) }), h("td", { text: a.outcome }), h("td", { text: a.error })))
      : h("tr", {}, h("td", { colspan: 6, class: "muted", text: "Not started yet." }))));

  const stateBox = h("div", { id: "state-at", "aria-live": "polite" }, h("p", { class: "muted", text: "Choose “State after this event” on any event of the timeline, or give a time, to see the job as it was then." }));
  const atInput = h("input", { id: "state-time", size: 32, maxlength: 64, value: history.length ? history[history.length - 1].timestamp : "", "aria-describedby": "state-time-help" });
  const atForm = h("form", { class: "filters", id: "state-time-form" },
    h("label", { for: "state-time" }, "Time (ISO 8601 with a zone)", atInput),
    h("button", { type: "submit", text: "Show the state then" }),
    h("span", { id: "state-time-help", class: "muted", text: "The fold of every event stamped at or before that time." }));
  atForm.addEventListener("submit", (event) => {
    event.preventDefault();
    stateAtTime(atInput.value.trim()).catch((err) => { stateBox.replaceChildren(h("p", { class: "error", text: String(err.message) })); });
  });
  async function stateAtTime(at) {
    const answer = await api(`/v1/jobs/${id}?at=${encodeURIComponent(at)}`);
    timeline.querySelectorAll("li.selected").forEach((li) => li.classList.remove("selected"));
    if (!answer.ok) { stateBox.replaceChildren(h("p", { class: "error", role: "alert", text: problemText(answer) })); return; }
    const st = answer.body;
    const item = timeline.querySelector(`li[data-version="${st.version}"]`);
    if (item) item.classList.add("selected");
    stateBox.replaceChildren(
      h("h3", { id: "state-title", tabindex: "-1", text: `At ${at}: ${st.status} (version ${st.version})` }),
      h("pre", { id: "state-json", text: json(st) }));
    document.getElementById("state-title").focus();
  }
  const timeline = h("ol", { class: "timeline", id: "timeline", "aria-label": "History, oldest first" },
    history.map((e) => {
      const d = e.data;
      const meta = [];
      if (d.attempt !== undefined) meta.push(h("span", {}, "attempt ", h("strong", { text: d.attempt })));
      if (d.worker_id) meta.push(h("span", {}, "worker ", h("code", { text: d.worker_id })));
      if (d.retry_at) meta.push(h("span", { text: "retry at " + when(d.retry_at) }));
      if (d.extra_attempts) meta.push(h("span", { text: `+${d.extra_attempts} attempt(s)` }));
      if (e.trace_id || d.trace_id) meta.push(h("span", {}, "trace ", h("code", { text: e.trace_id || d.trace_id })));
      const button = h("button", { type: "button", class: "state-button", "aria-label": `State after event ${e.version}, ${e.event_type}`, text: "State after this event" });
      const item = h("li", { "data-version": e.version, "data-event": e.event_type },
        h("div", { class: "ev-head" },
          h("span", { class: "muted mono", text: "v" + e.version }),
          h("span", { class: "badge e-" + e.event_type, text: e.event_type }),
          h("span", { text: when(e.timestamp) }),
          h("span", {}, "by ", h("code", { class: "actor", text: e.actor })),
          button),
        h("div", { class: "ev-meta" }, meta,
          e.reason ? h("span", { class: "reason" }, "reason: ", h("q", { text: e.reason })) : "",
          d.error_message ? h("span", { class: "error-text" }, d.error_type ? d.error_type + ": " : "", d.error_message) : ""));
      button.addEventListener("click", () => stateAt(e, item).catch((err) => { stateBox.replaceChildren(h("p", { class: "error", text: String(err.message) })); }));
      return item;
    }));
  async function stateAt(e, item) {
    const answer = await api(`/v1/jobs/${id}?version=${e.version}`);
    timeline.querySelectorAll("li.selected").forEach((li) => li.classList.remove("selected"));
    item.classList.add("selected");
    if (!answer.ok) { stateBox.replaceChildren(h("p", { class: "error", text: problemText(answer) })); return; }
    const st = answer.body;
    stateBox.replaceChildren(
      h("h3", { id: "state-title", tabindex: "-1", text: `After version ${e.version} (${e.event_type}, ${when(e.timestamp)}): ${st.status}` }),
      h("pre", { id: "state-json", text: json(st) }));
    document.getElementById("state-title").focus();
  }

  page(main, "Job " + j.id.slice(0, 8),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "facts-title" }, h("h2", { id: "facts-title", text: "Job" }), facts),
      h("section", { class: "panel", "aria-labelledby": "verify-title" }, h("h2", { id: "verify-title", text: "Hash-chain verification" }), verification)),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "payload-title" }, h("h2", { id: "payload-title", text: "Payload" }),
        h("pre", { id: "payload", tabindex: "0", text: submitted ? json(submitted.data.payload) : "(not in the history)" })),
      h("section", { class: "panel", "aria-labelledby": "outcome-title" }, h("h2", { id: "outcome-title", text: showError ? "Error" : "Result" }),
        h("pre", { id: "outcome", tabindex: "0", text: showError ? json(j.error) : j.result === null || j.result === undefined ? "(none yet)" : json(j.result) }))),
    h("section", { class: "panel", "aria-labelledby": "attempts-title" }, h("h2", { id: "attempts-title", text: "Attempts" }), attemptsTable),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title", text: `Timeline (${history.length} events)` }), timeline),
      h("section", { class: "panel", "aria-labelledby": "state-at-title" }, h("h2", { id: "state-at-title", text: "State at a point of the timeline" }), atForm, stateBox)));
  const wanted = parseInt(params.get("version") || "", 10);
  if (wanted) {
    const item = timeline.querySelector(`li[data-version="${wanted}"]`);
    const e = history.find((ev) => ev.version === wanted);
    if (item && e) await stateAt(e, item);
  }
}

// ---- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(TENANT);
    location.hash = "#/";
    render();
  });
  document.getElementById("skip").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  });
  window.addEventListener("hashchange", () => { render().then(() => document.getElementById("main").focus({ preventScroll: true })); });
  render();
});
