// ToV Select dashboard: login (key in sessionStorage), jobs list with live status, job page.
"use strict";
(function () {
  const KEY = "tov.apiKey";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const body = document.body;
  const base = body.dataset.base || "";
  const page = body.dataset.page;
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, problem) {
      super(`${status} ${problem.title || ""}: ${problem.detail || ""}`);
      this.status = status;
      this.problem = problem;
    }
  }

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ?
        document.createTextNode(String(child)) : child);
    }
    return node;
  }

  const key = () => sessionStorage.getItem(KEY);

  async function api(path, options) {
    const opts = options || {};
    const response = await fetch(base + path, {
      method: opts.method || "GET",
      headers: { Accept: "application/json", Authorization: `Bearer ${key()}` },
      cache: "no-store",
    });
    if (!response.ok) {
      let problem = {};
      try { problem = await response.json(); } catch (e) { problem = { detail: response.statusText }; }
      if (response.status === 401) showLogin(problem.detail || "The key was refused.");
      throw new ApiError(response.status, problem);
    }
    return opts.blob ? response : response.json();
  }

  // -- login ------------------------------------------------------------------------------------

  function showLogin(message) {
    sessionStorage.removeItem(KEY);
    $("content").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("api-key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("api-key").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    try {
      await api("/v1/jobs?limit=1");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        $("login-error").textContent = `Cannot reach the API: ${err.message}`;
      }
      return;
    }
    $("api-key").value = "";
    start();
  }

  // -- formatting ------------------------------------------------------------------------------

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
      `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function badge(status) {
    return h("span", { class: `badge ${status}`, "data-status": status }, status);
  }

  function budget(job) {
    const sel = (job.params && job.params.selection) || {};
    if (sel.budget === undefined) return "";
    return sel.budget < 1 ? `${Math.round(sel.budget * 1000) / 10}%` : String(sel.budget);
  }

  function progressCell(job) {
    const fraction = job.status === "succeeded" ? 1 : job.progress.fraction;
    return h("td", {}, h("progress", { max: 1, value: fraction }), " ",
      `${Math.round(fraction * 100)}%`);
  }

  // -- jobs page -------------------------------------------------------------------------------

  let jobsTimer = null;
  let extraPages = [];
  let olderCursor = null;

  async function loadJobs() {
    const status = $("status-filter").value;
    const query = `/v1/jobs?limit=50${status ? `&status=${encodeURIComponent(status)}` : ""}`;
    const data = await api(query);
    const items = data.items.concat(extraPages);
    const rows = items.map((job) => h("tr", { "data-job-id": job.id },
      h("td", {}, h("a", { href: `${base}/ui/jobs/${encodeURIComponent(job.id)}` }, job.id)),
      h("td", {}, badge(job.status)),
      h("td", {}, job.progress.stage || ""),
      progressCell(job),
      h("td", {}, job.method),
      h("td", {}, job.model),
      h("td", {}, budget(job)),
      h("td", {}, when(job.created_at)),
      h("td", {}, when(job.finished_at))));
    $("jobs-table").tBodies[0].replaceChildren(...rows);
    $("jobs-empty").hidden = items.length > 0;
    if (!extraPages.length) olderCursor = data.next_cursor;
    $("jobs-more").hidden = !olderCursor;
    $("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    return items;
  }

  async function loadDatasets() {
    const rows = (await api("/v1/datasets")).map((d) => h("tr", { "data-dataset-id": d.id },
      h("td", {}, h("code", {}, d.id)),
      h("td", {}, d.name),
      h("td", {}, d.rows.toLocaleString()),
      h("td", {}, d.row_format),
      h("td", { class: "wrap" }, (d.columns || []).join(", ")),
      h("td", {}, `${(d.size_bytes / 1024).toFixed(1)} KiB`),
      h("td", {}, when(d.created_at))));
    $("datasets-table").tBodies[0].replaceChildren(...rows);
  }

  async function pollJobs() {
    clearTimeout(jobsTimer);
    try {
      const items = await loadJobs();
      const live = items.some((job) => !TERMINAL.has(job.status));
      jobsTimer = setTimeout(pollJobs, live ? 2000 : 5000);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        $("jobs-updated").textContent = `update failed: ${err.message}`;
        jobsTimer = setTimeout(pollJobs, 5000);
      }
    }
  }

  async function olderJobs() {
    if (!olderCursor) return;
    const status = $("status-filter").value;
    const data = await api(`/v1/jobs?limit=50&cursor=${encodeURIComponent(olderCursor)}` +
      (status ? `&status=${encodeURIComponent(status)}` : ""));
    extraPages = extraPages.concat(data.items);
    olderCursor = data.next_cursor;
    await loadJobs();
  }

  function startJobsPage() {
    $("status-filter").onchange = () => { extraPages = []; olderCursor = null; pollJobs(); };
    $("jobs-more").onclick = olderJobs;
    pollJobs();
    loadDatasets().catch(() => {});
  }

  // -- job page --------------------------------------------------------------------------------

  const jobId = body.dataset.jobId;
  let jobTimer = null;
  let resultsShown = false;
  let targetCount = 1; // K: a multi-target job has results per target (?target=k)
  const datasetNames = {};

  async function datasetLabel(id) {
    if (!(id in datasetNames)) {
      try {
        const d = await api(`/v1/datasets/${encodeURIComponent(id)}`);
        datasetNames[id] = `${d.name} (${d.rows.toLocaleString()} rows)`;
      } catch (err) {
        datasetNames[id] = "";
      }
    }
    return datasetNames[id] ? `${id} · ${datasetNames[id]}` : id;
  }

  async function renderJob(job) {
    targetCount = job.k || 1;
    $("job-id").textContent = job.id;
    $("job-status").replaceWith(Object.assign(badge(job.status), { id: "job-status" }));
    const p = job.progress;
    const fraction = job.status === "succeeded" ? 1 : p.fraction;
    $("job-progress").value = fraction;
    $("job-percent").textContent = `${(fraction * 100).toFixed(1)}%`;
    const parts = [];
    if (p.stage) parts.push(`stage: ${p.stage}`);
    if (p.rows_total) parts.push(`${p.rows_done.toLocaleString()} / ${p.rows_total.toLocaleString()} rows scored`);
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${duration(p.eta_seconds)}`);
    if (p.message) parts.push(p.message);
    $("job-progress-text").textContent = parts.join(" · ");
    $("job-error").hidden = !job.error;
    $("job-error").textContent = job.error ? `${job.error.code}: ${job.error.detail}` : "";
    $("cancel").hidden = TERMINAL.has(job.status);
    const took = job.started_at && job.finished_at ?
      duration((new Date(job.finished_at) - new Date(job.started_at)) / 1000) : "";
    const sel = (job.params && job.params.selection) || {};
    const tov = (job.params && job.params.tov) || {};
    const details = [
      ["Pool", await datasetLabel(job.pool)],
      targetCount > 1 ?
        [`Targets (K = ${targetCount})`, (await Promise.all((job.targets || []).map(datasetLabel)))
          .map((label, k) => `${k}: ${label}`).join(" · ")] :
        ["Validation", await datasetLabel(job.validation)],
      ["Model", job.model], ["Method", `${job.method} (${job.task})`],
      ["Budget", `${budget(job)} · ${sel.strategy || ""} · ${sel.num_bins || ""} bins`],
      ["ToV", `rounds ${tov.rounds ?? "auto"} · lr ${tov.learning_rate} · |U| ${tov.base_size ?? "auto"}`],
      ["Created", when(job.created_at)], ["Run time", took],
      ["Attempt", String(job.attempt)], ["Metadata", JSON.stringify(job.metadata || {})],
    ];
    $("job-details").replaceChildren(...details.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  async function loadEvents() {
    const events = await api(`/v1/jobs/${encodeURIComponent(jobId)}/events`);
    $("events-table").tBodies[0].replaceChildren(...events.map((e) => h("tr", {},
      h("td", {}, when(e.at)), h("td", {}, e.kind), h("td", {}, String(e.attempt)),
      h("td", { class: "wrap" }, e.message))));
  }

  async function download(what, format, target = 0) {
    const query = target ? `&target=${target}` : "";
    const response = await api(
      `/v1/jobs/${encodeURIComponent(jobId)}/${what}?format=${format}${query}`, { blob: true });
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const name = target ? `${jobId}-target${target}-${what}` : `${jobId}-${what}`;
    const link = h("a", { href: url, download: `${name}.${format}` });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function downloadButtons() {
    const buttons = [];
    for (const what of ["selection", "subset", "scores"]) {
      for (const format of ["jsonl", "csv", "parquet"]) {
        buttons.push(h("button", {
          type: "button", "data-download": `${what}.${format}`,
          onclick: () => download(what, format).catch((err) => alert(err.message)),
        }, `${what}.${format}`));
      }
    }
    // The buttons above (and the charts) are target 0's; later targets get JSONL downloads.
    for (let target = 1; target < targetCount; target++) {
      for (const what of ["selection", "subset", "scores"]) {
        buttons.push(h("button", {
          type: "button", "data-download": `target${target}:${what}.jsonl`,
          onclick: () => download(what, "jsonl", target).catch((err) => alert(err.message)),
        }, `target ${target}: ${what}.jsonl`));
      }
    }
    $("downloads").replaceChildren(...buttons);
  }

  // -- explanations, harmful rows, leaks, verification -----------------------------------------

  const num = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const cell = (text, cls) => h("td", cls ? { class: cls } : {}, text);

  async function loadExplanations() {
    const data = await api(`/ui/api/jobs/${encodeURIComponent(jobId)}/explanations?limit=100`);
    const rows = data.rows.map((r) => h("tr", { "data-index": r.index, "data-source": r.source },
      cell(String(r.index)),
      cell(r.reason),
      cell(r.bin === null ? "–" : String(r.bin)),
      cell(r.bin_rank === null ? "–" : `${r.bin_rank} / ${r.bin_quota}`),
      cell(num(r.score)),
      cell(num(r.loss_before)),
      cell(num(r.loss_after)),
      cell(num(r.loss_change), r.loss_change === null ? "" : r.loss_change > 0 ? "worse" : "better"),
      cell(r.preview, "wrap preview")));
    $("explanations-table").tBodies[0].replaceChildren(...rows);
    $("explanations-summary").textContent = `${data.total} rows selected, ` +
      `${data.by_score} by score (rank within their length bin's quota), ` +
      `${data.total - data.by_score} at random` +
      (data.rows.length < data.total ? `; the first ${data.rows.length} shown.` : ".") +
      " Loss: mean per loss token under θ_bas (before) and θ_val (after), averaged over rounds.";
    $("explanations").hidden = false;
  }

  async function loadHarmful() {
    const data = await api(`/v1/jobs/${encodeURIComponent(jobId)}/harmful?limit=10`);
    const rows = data.items.map((r) => h("tr", { "data-index": r.index },
      cell(String(r.index)), cell(num(r.loss_before)), cell(num(r.loss_after)),
      cell(`+${num(r.loss_increase)}`, "worse"), cell(r.selected ? "yes" : ""),
      cell(r.preview, "wrap preview")));
    $("harmful-table").tBodies[0].replaceChildren(...rows);
    $("harmful-table").hidden = rows.length === 0;
    $("harmful-empty").hidden = rows.length > 0;
    $("harmful-empty").textContent = data.explained ?
      "No row's loss rose." : "This job stored no losses (its method has none).";
    $("harmful-summary").textContent = data.explained ?
      `${data.rows_with_loss_increase} pool rows' loss rose; the worst ${rows.length} shown.` : "";
    $("harmful").hidden = false;
  }

  async function loadLeaks(job) {
    $("leaks").hidden = false;
    let data;
    try {
      data = await api(`/v1/jobs/${encodeURIComponent(jobId)}/leaks?limit=50`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && job.leak_count === undefined) {
        $("leaks-summary").textContent = "This server has no leak check.";
        return;
      }
      throw err;
    }
    const rows = data.items.map((r) => h("tr", { "data-index": r.pool_index },
      cell(String(r.pool_index)), cell(r.source), cell(`${r.dataset} #${r.match_index}`),
      cell(num(r.similarity, 3)), cell(r.kind), cell(r.excluded ? "yes" : "no"),
      cell(r.pool_preview, "wrap preview"), cell(r.match_preview, "wrap preview")));
    $("leaks-table").tBodies[0].replaceChildren(...rows);
    $("leaks-table").hidden = rows.length === 0;
    $("leaks-summary").textContent = data.total ?
      `${data.total} leak(s) found, ${data.excluded_total} excluded from the selection` +
        (rows.length < data.total ? `; the first ${rows.length} shown.` : ".") :
      "No leaks: no pool row duplicates or nearly duplicates a validation or reference row.";
  }

  function renderVerification(job) {
    const v = job.verify;
    $("verification").hidden = false;
    if (!v) {
      $("verification-summary").textContent = "Verification: not requested.";
      $("verification-details").replaceChildren();
      return;
    }
    if (v.error) {
      $("verification-summary").textContent = `Verification failed: ${v.error}`;
      $("verification-details").replaceChildren();
      return;
    }
    if (v.base_loss === undefined || v.base_loss === null) {
      $("verification-summary").textContent = `Verification requested (holdout ${v.holdout}); ` +
        "no figures yet.";
      $("verification-details").replaceChildren();
      return;
    }
    $("verification-summary").textContent = "Held-out loss after a short fine-tune on the " +
      "selection vs a same-size random subset (lower is better).";
    const items = [
      ["Holdout", String(v.holdout)], ["Seeds", String(v.seeds)],
      ["Base model", num(v.base_loss)], ["Selection", num(v.selected_loss)],
      ["Random subset", num(v.random_loss)],
      ["Improvement", `${num(v.improvement)} ± ${num(v.improvement_sd)} ` +
        `(${num(v.improvement_percent)}%)`],
    ];
    $("verification-details").replaceChildren(...items.flatMap(([k, value]) =>
      [h("dt", {}, k), h("dd", { "data-field": k.toLowerCase().replace(/ /g, "-") }, value)]));
  }

  async function showPanels(job) {
    renderVerification(job);
    const results = await Promise.allSettled([loadExplanations(), loadHarmful(), loadLeaks(job)]);
    const failed = results.filter((r) => r.status === "rejected");
    for (const r of failed) console.warn("panel failed:", r.reason && r.reason.message);
    body.dataset.panelsReady = failed.length ? "partial" : "true";
  }

  async function showResults() {
    resultsShown = true;
    $("results").hidden = false;
    downloadButtons();
    const id = encodeURIComponent(jobId);
    const [summary, composition] = await Promise.all([
      api(`/ui/api/jobs/${id}/summary`),
      api(`/ui/api/jobs/${id}/composition?column=source`),
    ]);
    $("results-summary").textContent = `${summary.selected.toLocaleString()} of ` +
      `${summary.rows.toLocaleString()} pool rows selected (${summary.selected_random} at random); ` +
      `${summary.scored.toLocaleString()} rows scored.` +
      (targetCount > 1 ? ` Charts: target 0 of ${targetCount}.` : "");
    window.TovCharts.histogram($("chart-histogram"), summary);
    window.TovCharts.lengthBoxes($("chart-length"), summary);
    window.TovCharts.lengthSelected($("chart-length-selected"), summary);
    window.TovCharts.composition($("chart-composition"), composition);
    body.dataset.chartsReady = "true";
  }

  async function pollJob() {
    clearTimeout(jobTimer);
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
      await renderJob(job);
      await loadEvents();
      if (!TERMINAL.has(job.status)) {
        jobTimer = setTimeout(pollJob, 1500);
      } else if (job.status === "succeeded" && !resultsShown) {
        await showResults();
        await showPanels(job);
      } else {
        body.dataset.chartsReady = "none";
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      $("job-error").hidden = false;
      $("job-error").textContent = err instanceof ApiError ? err.problem.detail || err.message :
        `update failed: ${err.message}`;
      if (!(err instanceof ApiError && err.status === 404)) jobTimer = setTimeout(pollJob, 5000);
    }
  }

  function startJobPage() {
    $("cancel").onclick = async () => {
      if (!confirm(`Cancel ${jobId}?`)) return;
      await renderJob(await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" }));
      pollJob();
    };
    pollJob();
  }

  // -- start -----------------------------------------------------------------------------------

  function start() {
    $("login").hidden = true;
    $("content").hidden = false;
    $("logout").hidden = false;
    if (page === "jobs") startJobsPage();
    if (page === "job") startJobPage();
  }

  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => {
    clearTimeout(jobsTimer);
    clearTimeout(jobTimer);
    showLogin("");
  });
  if (key()) start(); else showLogin("");
})();
