// The nnverify web page: sign in with a token, submit jobs, watch them run, download their evidence.
// Plain browser JavaScript, no build step. Every request carries the bearer token, so the event
// stream is read with fetch() (EventSource cannot send headers) and downloads go through Blobs.
"use strict";

(() => {
  const TOKEN_KEY = "nnverify.token";
  const FINAL = new Set(["done", "failed", "cancelled"]);
  const LIST_LIMIT = 25;
  const MAX_BOUND_ROWS = 50;

  const $ = (id) => document.getElementById(id);
  const page = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    job: null,            // the JobPublic on view
    live: {},             // merged progress events of the job on view
    watcher: null,        // AbortController of the job view's event stream
    listTimer: null,
    tickTimer: null,
  };

  // ---- HTTP ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(`HTTP ${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  /** The API's error detail as one line (FastAPI sends a string, or a list for validation errors). */
  function detailText(detail) {
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}`).join("; ");
    }
    return typeof detail === "string" ? detail : JSON.stringify(detail);
  }

  /** fetch() with the bearer token; throws ApiError (with the API's detail) on a non-2xx answer. */
  async function api(path, options = {}, token = page.token) {
    const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
    const resp = await fetch(path, Object.assign({}, options, { headers }));
    if (resp.ok) return resp;
    let detail = resp.statusText || "request failed";
    try {
      const body = await resp.json();
      if (body && body.detail !== undefined) detail = detailText(body.detail);
    } catch (_) { /* not JSON: keep the status text */ }
    const err = new ApiError(resp.status, detail);
    if (resp.status === 401 && token === page.token && page.token) signOut(`Your token was refused: ${err.message}`);
    throw err;
  }

  async function apiJson(path, options) {
    return (await api(path, options)).json();
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

  // ---- small DOM helpers ---------------------------------------------------------------------

  /** A new element with attributes/properties and children (strings become text nodes). */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function showError(id, message) {
    const node = $(id);
    node.textContent = message || "";
    node.hidden = !message;
  }

  /** A timestamp from the API (naive ones are UTC) as a Date. */
  function parseTime(text) {
    if (!text) return null;
    return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text}Z`);
  }

  function ago(text) {
    const t = parseTime(text);
    if (!t) return "";
    const s = (Date.now() - t.getTime()) / 1000;
    if (s < 10) return "just now";
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return t.toLocaleString();
  }

  function seconds(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    if (value < 1) return `${(value * 1000).toFixed(value < 0.01 ? 2 : 1)} ms`;
    if (value < 120) return `${value.toFixed(2)} s`;
    return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  }

  function number(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(3) : value.toFixed(4);
  }

  // ---- sign in / out -------------------------------------------------------------------------

  async function signIn(token) {
    showError("login-error", "");
    $("login-submit").disabled = true;
    try {
      await api("/v1/jobs?limit=1", {}, token);
      page.token = token;
      localStorage.setItem(TOKEN_KEY, token);
      showApp();
    } catch (err) {
      const msg = err instanceof ApiError && err.status === 401
        ? `Token refused (HTTP 401): ${err.detail}.` : `Could not sign in: ${err.message}`;
      showError("login-error", msg);
    } finally {
      $("login-submit").disabled = false;
    }
  }

  function signOut(message) {
    page.token = "";
    localStorage.removeItem(TOKEN_KEY);
    closeJob();
    clearInterval(page.listTimer);
    page.listTimer = null;
    $("job-list").replaceChildren();
    $("app-view").hidden = true;
    $("session").hidden = true;
    $("login-view").hidden = false;
    $("token").value = "";
    showError("login-error", message || "");
    $("token").focus();
  }

  function showApp() {
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("session").hidden = false;
    $("session-label").textContent = `Signed in · token …${page.token.slice(-4)}`;
    refreshList();
    clearInterval(page.listTimer);
    page.listTimer = setInterval(() => { if (!document.hidden) refreshList(); }, 5000);
    const id = jobIdFromHash();
    if (id) openJob(id);
  }

  // ---- submit --------------------------------------------------------------------------------

  async function submitJob(form) {
    showError("submit-error", "");
    const button = $("submit-button");
    button.disabled = true;
    button.textContent = "Submitting…";
    try {
      const body = new FormData(form);
      const created = await apiJson("/v1/jobs", { method: "POST", body });
      refreshList();
      openJob(created.id);
    } catch (err) {
      if (page.token) showError("submit-error", err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Submit job";
    }
  }

  // ---- the job list --------------------------------------------------------------------------

  async function refreshList() {
    if (!page.token) return;
    try {
      const pageData = await apiJson(`/v1/jobs?limit=${LIST_LIMIT}`);
      showError("list-error", "");
      renderList(pageData);
    } catch (err) {
      if (page.token) showError("list-error", `Could not load jobs: ${err.message}`);
    }
  }

  function renderList(data) {
    const items = data.items.map((job) => {
      const tag = job.verdict && job.state === "done" ? job.verdict : job.state;
      const active = !FINAL.has(job.state);
      const li = el("li", {
        class: `job-item${page.job && page.job.id === job.id ? " selected" : ""}`,
        tabIndex: 0, "data-id": job.id, title: job.id,
        onclick: () => openJob(job.id),
        onkeydown: (e) => { if (e.key === "Enter") openJob(job.id); },
      },
      el("span", { class: `pill pill-${tag}` }, tag),
      el("span", { class: "job-item-main" },
        el("span", { class: "job-item-name" }, `${job.model_name || "model"} · ${job.spec_name || "spec"}`),
        el("span", { class: "job-item-meta" },
          [ago(job.created_at), job.seconds !== null ? seconds(job.seconds) : null, job.method]
            .filter(Boolean).join(" · "))),
      active ? el("button", {
        type: "button", class: "btn btn-danger btn-small", textContent: "Cancel",
        onclick: (e) => { e.stopPropagation(); cancelJob(job.id); },
      }) : null);
      return li;
    });
    $("job-list").replaceChildren(...items);
    $("job-count").textContent = data.total === 0 ? "No jobs yet."
      : `Showing ${data.items.length} of ${data.total} job${data.total === 1 ? "" : "s"}, newest first.`;
  }

  async function cancelJob(id) {
    try {
      const job = await apiJson(`/v1/jobs/${id}`, { method: "DELETE" });
      if (page.job && page.job.id === id) renderJob(job);
    } catch (err) {
      if (page.job && page.job.id === id) showError("job-error", `Cancel failed: ${err.message}`);
      else showError("list-error", `Cancel failed: ${err.message}`);
    }
    refreshList();
  }

  // ---- the job view --------------------------------------------------------------------------

  function jobIdFromHash() {
    const m = /^#job\/([0-9a-fA-F-]{36})$/.exec(location.hash);
    return m ? m[1] : null;
  }

  function closeJob() {
    if (page.watcher) page.watcher.abort();
    page.watcher = null;
    page.job = null;
    page.live = {};
    clearInterval(page.tickTimer);
    $("job-body").hidden = true;
    $("job-empty").hidden = false;
  }

  /** Show job ``id`` and follow its event stream until it is final. */
  function openJob(id) {
    closeJob();
    if (location.hash !== `#job/${id}`) history.replaceState(null, "", `#job/${id}`);
    for (const li of document.querySelectorAll(".job-item")) li.classList.toggle("selected", li.dataset.id === id);
    page.watcher = new AbortController();
    page.tickTimer = setInterval(renderElapsed, 500);
    watch(id, page.watcher.signal);
  }

  /** Read the job's server-sent events; reconnect (after a fresh snapshot) if the stream drops early. */
  async function watch(id, signal) {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        const resp = await api(`/v1/jobs/${id}/events`, { signal, headers: { Accept: "text/event-stream" } });
        await readEvents(resp.body, (event, data) => { if (!signal.aborted) onEvent(event, data); });
        if (page.job && page.job.id === id && FINAL.has(page.job.state)) return;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof ApiError && err.status < 500) {
          showJobMissing(id, err);
          return;
        }
      }
      await sleep(Math.min(1000 * 2 ** attempt, 10000), signal);
    }
  }

  /** Parse a text/event-stream body, calling ``onEvent(name, data)`` for each complete event. */
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parseEventBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message) onEvent(message.event, message.data);
      }
    }
  }

  function parseEventBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { event, data: data.join("\n") } : null;
  }

  /** One server-sent event: ``job`` snapshots replace the view, ``progress`` updates the live panel. */
  function onEvent(event, data) {
    let payload;
    try { payload = JSON.parse(data); } catch (_) { return; }
    if (event === "job") {
      const wasFinal = page.job && FINAL.has(page.job.state);
      if (payload.progress) mergeProgress(payload.progress);
      renderJob(payload);
      if (FINAL.has(payload.state) && !wasFinal) refreshList();
    } else if (event === "progress") {
      mergeProgress(payload);
      if (page.job && page.job.state === "queued" && payload.event !== "done") {
        renderJob(Object.assign({}, page.job, { state: "running" }));   // the stream sends no job event on start
      } else {
        renderLive();
      }
    }
  }

  /** Fold one progress event into the live summary (step and search events carry different fields). */
  function mergeProgress(ev) {
    const live = page.live;
    if (ev.event === "start") live.message = `Started on ${ev.worker || "a worker"} (attempt ${ev.attempt || 1})`;
    if (ev.event === "step" && ev.message) live.message = ev.message;
    for (const key of ["proved", "goals", "best_bound", "domains", "pending"]) {
      if (ev[key] !== undefined) live[key] = ev[key];
    }
    if (ev.event === "search" && ev.method) live.searchMethod = ev.method;
    if (Number.isFinite(ev.elapsed)) {
      live.elapsed = ev.elapsed;
      live.at = performance.now();
    }
  }

  function showJobMissing(id, err) {
    $("job-empty").hidden = true;
    $("job-body").hidden = false;
    $("job-title").textContent = "Job not available";
    $("job-id").textContent = id;
    $("job-state").textContent = "";
    $("job-state").className = "badge";
    for (const part of ["live", "final", "tables", "log-box", "job-cancel"]) $(part).hidden = true;
    $("facts").replaceChildren();
    showError("job-error", err.message);
  }

  function renderJob(job) {
    page.job = job;
    const final = FINAL.has(job.state);
    $("job-empty").hidden = true;
    $("job-body").hidden = false;
    showError("job-error", "");
    $("job-title").textContent = `${job.model_name || "model"} · ${job.spec_name || "spec"}`;
    $("job-id").textContent = `Job ${job.id}`;
    $("job-state").textContent = job.cancel_requested && !final ? `${job.state} · cancelling` : job.state;
    $("job-state").className = `badge badge-${job.state}`;
    $("job-cancel").hidden = final;
    $("live").hidden = final;
    $("final").hidden = !final;
    if (final) {
      clearInterval(page.tickTimer);
      renderFinal(job);
    } else {
      renderLive();
    }
    renderFacts(job);
    renderTables(job);
    $("log-box").hidden = !job.log.length;
    $("log").textContent = job.log.join("\n");
  }

  function renderLive() {
    const job = page.job;
    if (!job || FINAL.has(job.state)) return;
    const live = page.live;
    const waiting = job.state === "queued" ? `Queued on ${job.queue} (${job.queue_reason})` : "Running…";
    $("live-step").textContent = live.message || waiting;
    const known = Number.isFinite(live.goals) && live.goals > 0;
    $("live-goals").textContent = known ? `${live.proved} / ${live.goals}` : "–";
    $("live-bar").style.width = known ? `${(100 * live.proved) / live.goals}%` : "0%";
    $("live-bar").classList.toggle("indeterminate", !known && job.state === "running");
    $("live-domains").replaceChildren(Number.isFinite(live.domains) ? live.domains.toLocaleString() : "–",
      Number.isFinite(live.pending) ? el("span", { class: "sub" }, `${live.pending.toLocaleString()} pending`) : "");
    $("live-bound").textContent = live.best_bound === null || live.best_bound === undefined ? "–" : number(live.best_bound);
    renderElapsed();
  }

  /** Elapsed time: the verifier's own clock plus the time since its last event (else since start). */
  function renderElapsed() {
    const job = page.job;
    if (!job || FINAL.has(job.state)) return;
    const live = page.live;
    let value = null;
    if (Number.isFinite(live.elapsed)) value = live.elapsed + (performance.now() - live.at) / 1000;
    else if (job.started_at) value = Math.max(0, (Date.now() - parseTime(job.started_at).getTime()) / 1000);
    $("live-elapsed").textContent = value === null ? "–" : seconds(value);
  }

  function renderFinal(job) {
    const word = job.verdict || job.state;
    $("verdict").className = `verdict verdict-${word}`;
    $("verdict").dataset.verdict = word;
    $("verdict-word").textContent = word;
    $("verdict-reason").textContent = job.reason || "";
    $("dl-result").hidden = job.result === null;
    $("dl-certificate").hidden = !job.has_certificate;
    $("dl-counterexample").hidden = !job.has_counterexample;
  }

  function renderFacts(job) {
    const rows = [
      ["Route", job.route ? [job.route, job.route_reason] : null],
      ["Method", job.method ? `${job.method}${job.requested_method !== "auto" ? "" : " (chosen by auto)"}`
        : job.requested_method],
      ["Queue", [job.queue, job.queue_reason]],
      ["Certificate", job.certificate_checked === null || job.certificate_checked === undefined ? null
        : job.certificate_checked ? "checked independently" : "not checked"],
      ["Submitted", parseTime(job.created_at).toLocaleString()],
      ["Run time", job.seconds !== null ? `${seconds(job.seconds)} of ${seconds(job.timeout)} allowed`
        : `limit ${seconds(job.timeout)}`],
      ["Worker", job.worker ? `${job.worker}${job.attempts > 1 ? ` (attempt ${job.attempts})` : ""}` : null],
    ];
    $("facts").replaceChildren(...rows.filter(([, v]) => v).map(([k, v]) => el("div", {},
      el("dt", {}, k),
      Array.isArray(v) ? el("dd", {}, el("span", { class: "strong" }, v[0]), v[1] ? el("span", { class: "muted" }, ` — ${v[1]}`) : null)
        : el("dd", {}, v))));
  }

  function renderTables(job) {
    const timings = Object.entries(job.timings || {});
    const bounds = job.bounds || [];
    $("tables").hidden = !timings.length && !bounds.length;
    $("timings-box").hidden = !timings.length;
    $("bounds-box").hidden = !bounds.length;
    const total = job.timings.total || timings.reduce((s, [k, v]) => s + (k === "total" ? 0 : v), 0);
    const phases = timings.filter(([k]) => k !== "total");
    if (job.timings.total !== undefined) phases.push(["total", job.timings.total]);
    $("timings").tBodies[0].replaceChildren(...phases.map(([name, value]) => el("tr", { class: name === "total" ? "total" : "" },
      el("td", {}, name),
      el("td", { class: "num" }, seconds(value)),
      el("td", { class: "share" }, name === "total" ? null
        : el("div", { class: "share-bar", style: `width:${total > 0 ? Math.min(100, (100 * value) / total) : 0}%` })))));
    const rows = bounds.slice(0, MAX_BOUND_ROWS).map((b) => el("tr", {},
      el("td", {}, String(b.region ?? "")), el("td", {}, String(b.polytope ?? "")),
      el("td", { class: "num" }, number(b.lower)), el("td", {}, b.method || ""),
      el("td", {}, el("span", { class: b.proved ? "tick" : "open" }, b.proved ? "proved" : "open"))));
    if (bounds.length > MAX_BOUND_ROWS) {
      rows.push(el("tr", {}, el("td", { colSpan: 5, class: "muted" }, `… and ${bounds.length - MAX_BOUND_ROWS} more`)));
    }
    $("bounds").tBodies[0].replaceChildren(...rows);
  }

  // ---- downloads -----------------------------------------------------------------------------

  /** Fetch ``/v1/jobs/{id}/{what}`` with the token and save it through an object URL. */
  async function download(what) {
    const job = page.job;
    if (!job) return;
    showError("job-error", "");
    try {
      const resp = await api(`/v1/jobs/${job.id}/${what}`);
      const blob = await resp.blob();
      const fromHeader = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const name = fromHeader ? fromHeader[1] : `${job.id}-${what}.${what === "result" ? "txt" : "json"}`;
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
    } catch (err) {
      if (page.token) showError("job-error", `Download failed: ${err.message}`);
    }
  }

  // ---- wiring --------------------------------------------------------------------------------

  function init() {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("submit-form").addEventListener("submit", (e) => {
      e.preventDefault();
      submitJob(e.target);
    });
    $("refresh").addEventListener("click", refreshList);
    $("job-cancel").addEventListener("click", () => { if (page.job) cancelJob(page.job.id); });
    for (const what of ["result", "certificate", "counterexample"]) {
      $(`dl-${what}`).addEventListener("click", () => download(what));
    }
    window.addEventListener("hashchange", () => {
      const id = jobIdFromHash();
      if (id && page.token && (!page.job || page.job.id !== id)) openJob(id);
    });
    if (page.token) showApp();
    else signOut("");
  }

  init();
})();
