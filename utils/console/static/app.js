"use strict";
// The console page: plain JS over the JSON API of utils/console/app.py (no build step).
const $ = (id) => document.getElementById(id);
const state = { catalog: null, table: null, job: null, timer: null };

function fmt(value, unit = "") {
  if (value === null || value === undefined) return "-";
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [factor, suffix] of steps) {
    if (Math.abs(value) >= factor) return (value / factor).toFixed(2) + " " + suffix + unit;
  }
  return String(Math.round(value * 100) / 100) + (unit ? " " + unit : "");
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : `request failed (${response.status})`;
    throw new Error(message);
  }
  return body;
}

function postJSON(path, data) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });
}

function option(select, value, label) {
  const item = document.createElement("option");
  item.value = value; item.textContent = label || value;
  select.appendChild(item);
}

function card(container, label, value, id) {
  const div = document.createElement("div");
  div.className = "card";
  if (id) div.id = id;
  div.innerHTML = `<span class="muted"></span><b></b>`;
  div.querySelector("span").textContent = label;
  div.querySelector("b").textContent = value;
  container.appendChild(div);
}

function currentMethod() {
  return state.catalog.methods.find((m) => m.name === $("method-select").value);
}

function isManual() {
  return $("recommendation-select").value === "manual";
}

async function refreshFiles(select) {
  const files = await api("/api/files");
  $("workdir").textContent = "work directory: " + files.root;
  const models = $("model-select"), configs = $("config-select");
  const keep = select || models.value;
  models.innerHTML = ""; configs.innerHTML = "";
  for (const m of files.models) option(models, m.name, `${m.name} (${m.kind}, ${fmt(m.size, "B")})`);
  option(configs, "", "(none: exported module)");
  for (const c of files.configs) option(configs, c.name);
  if (keep && [...models.options].some((o) => o.value === keep)) models.value = keep;
  const calib = $("calib-select");
  calib.innerHTML = "";
  for (const f of files.image_folders) option(calib, f.name, `${f.name} (${f.images} images)`);
}

function fillRecommendations() {
  const method = currentMethod(), select = $("recommendation-select");
  select.innerHTML = "";
  for (const r of method.recommendations) option(select, r.name);
  select.value = method.default_recommendation;
  $("method-help").textContent = method.help;
  const budgets = $("budget-select");
  budgets.innerHTML = "";
  option(budgets, "", "none (ratio)");
  for (const b of method.budgets) option(budgets, b, b.replace("target_", "") + " fraction kept");
  $("budget-label").hidden = method.budgets.length === 0;
  updateMode();
}

function updateMode() {
  const rec = currentMethod().recommendations.find((r) => r.name === $("recommendation-select").value);
  const budget = $("budget-select").value;
  $("ratio-label").hidden = (isManual() && currentMethod().manual !== "layer_ranks") || Boolean(budget);
  $("budget-input").disabled = !budget;
  $("preview-button").disabled = !currentMethod().preview || Boolean(budget);
  if (rec && rec.help) $("method-help").textContent = currentMethod().help + " - " + rec.help;
  for (const input of document.querySelectorAll("#layer-table input.manual")) {
    const usable = currentMethod().manual === "layer_ranks" || input.dataset.pruning === "yes";
    input.disabled = !isManual() || !usable;
    input.hidden = !usable;
    const kind = currentMethod().manual;
    input.placeholder = kind === "layer_indices" ? "0,3,5" : kind === "layer_ranks" ? "rank(s)" : "ratio";
  }
}

function renderTable(table) {
  state.table = table;
  const body = document.querySelector("#layer-table tbody");
  body.innerHTML = "";
  for (const row of table.layers) {
    const tr = document.createElement("tr");
    tr.dataset.name = row.name;
    if (!row.prunable) tr.className = "fixed";
    const cells = [row.name, row.kind, row.in, row.out, fmt(row.params), fmt(row.macs),
      row.l2 === null ? "-" : row.l2.toFixed(3), row.gm === null ? "-" : row.gm.toFixed(3),
      row.prunable ? (row.root ? row.group : "↳ " + row.group) : (row.reason ? "fixed" : ""), "", "", "", ""];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text === null || text === undefined ? "-" : text;
      tr.appendChild(td);
    }
    if (!row.prunable && row.reason) tr.children[8].title = row.reason;
    if (row.in !== null && row.in !== undefined) {
      const input = document.createElement("input");
      input.className = "manual"; input.dataset.layer = row.name; input.type = "text";
      input.dataset.pruning = row.prunable && row.root ? "yes" : "no";
      tr.children[12].appendChild(input);
    }
    body.appendChild(tr);
  }
  const totals = $("totals");
  totals.innerHTML = "";
  card(totals, "parameters", fmt(table.totals.params), "total-params");
  card(totals, `MACs @ ${table.input_size[0]}x${table.input_size[1]}`, fmt(table.totals.macs), "total-macs");
  card(totals, "layers", table.totals.layers);
  card(totals, "prunable groups / filters", `${table.totals.prunable_groups} / ${table.totals.prunable_filters}`);
  $("preview-totals").innerHTML = "";
  updateMode();
}

function requestBody() {
  const manual = {};
  for (const input of document.querySelectorAll("#layer-table input.manual")) {
    if (input.value.trim()) manual[input.dataset.layer] = input.value.trim();
  }
  const ratio = $("ratio-input").value, budget = $("budget-select").value;
  const ratioShown = !$("ratio-label").hidden;
  return {
    budget, budget_value: budget && $("budget-input").value !== "" ? Number($("budget-input").value) : null,
    method: $("method-select").value, recommendation: $("recommendation-select").value,
    ratio: !ratioShown || ratio === "" ? null : Number(ratio), round_to: Number($("round-input").value || 1),
    manual, runtime: $("runtime-select").value,
  };
}

function renderPreview(preview) {
  for (const tr of document.querySelectorAll("#layer-table tbody tr")) {
    const row = preview.layers[tr.dataset.name];
    const cells = tr.children;
    if (!row) continue;
    const ranked = row.ranks !== undefined;
    cells[9].textContent = row.in ? row.in[1] : (ranked ? "rank" : "-");
    cells[10].textContent = row.out ? row.out[1] : (ranked ? String(row.ranks) +
      (row.vbmf_ranks !== undefined ? ` (vbmf ${row.vbmf_ranks})` : "") : "-");
    cells[11].textContent = fmt(row.macs[1]);
    cells[11].title = row.reason || "";
    const changed = row.macs[0] !== row.macs[1] ||
      (row.in && (row.in[0] !== row.in[1] || row.out[0] !== row.out[1]));
    tr.classList.toggle("changed", Boolean(changed));
  }
  const totals = $("preview-totals");
  totals.innerHTML = "";
  card(totals, "MACs before → after", `${fmt(preview.macs[0])} → ${fmt(preview.macs[1])}`, "preview-macs");
  card(totals, "MACs kept", (100 * preview.macs[1] / preview.macs[0]).toFixed(1) + "%");
  if (preview.prunable_filters !== undefined) {
    card(totals, "filters removed", `${preview.removed_filters} / ${preview.prunable_filters} (` +
      (100 * preview.ratio_achieved).toFixed(1) + "%)", "preview-ratio");
  } else {
    card(totals, "layers decomposed", preview.decomposed_layers, "preview-ratio");
  }
  document.body.dataset.step = "previewed";
}

function renderResult(result) {
  const table = $("comparison");
  const speedup = result.before.latency_ms / result.after.latency_ms;
  const rows = [["", "before", "after", "after / before"],
    ["parameters", fmt(result.before.params), fmt(result.after.params),
      (result.after.params / result.before.params).toFixed(3)],
    [`MACs @ ${result.input_size[0]}x${result.input_size[1]}`, fmt(result.before.macs), fmt(result.after.macs),
      (result.after.macs / result.before.macs).toFixed(3)],
    [`CPU latency (${result.runtime}, ms)`, result.before.latency_ms.toFixed(2), result.after.latency_ms.toFixed(2),
      (1 / speedup).toFixed(3)]];
  table.innerHTML = "";
  rows.forEach((cells, i) => {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement(i === 0 ? "th" : "td");
      td.textContent = text;
      tr.appendChild(td);
    }
    table.appendChild(tr);
  });
  const list = $("downloads");
  list.innerHTML = "";
  for (const file of result.files) {
    const li = document.createElement("li"), a = document.createElement("a");
    a.href = "/api/download/" + file.split("/").map(encodeURIComponent).join("/");
    a.textContent = file; a.setAttribute("download", "");
    if (file === result.report) a.id = "report-link";
    li.appendChild(a); list.appendChild(li);
  }
  $("command").textContent = result.commands.join("\n");
  $("result").hidden = false;
  state.run = result.run;
  $("step-quantize").hidden = !state.catalog.quantization;
  document.body.dataset.step = "compressed";
}

function renderQuantized(result) {
  const table = $("quantize-summary");
  table.innerHTML = "";
  for (const [key, value] of Object.entries(result.summary)) {
    if (value === null || typeof value === "object") continue;
    const tr = document.createElement("tr");
    const th = document.createElement("th"), td = document.createElement("td");
    th.textContent = key; td.textContent = typeof value === "number" ? fmt(value) : String(value);
    tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
  }
  const list = $("quantize-downloads");
  list.innerHTML = "";
  for (const file of result.files) {
    const li = document.createElement("li"), a = document.createElement("a");
    a.href = "/api/download/" + file.split("/").map(encodeURIComponent).join("/");
    a.textContent = file; a.setAttribute("download", "");
    li.appendChild(a); list.appendChild(li);
  }
  $("quantize-command").textContent = result.commands.join("\n");
  $("quantize-result").hidden = false;
  document.body.dataset.step = "quantized";
}

async function poll() {
  const job = await api(`/api/jobs/${state.job}`);
  $("progress-bar").value = job.progress;
  $("progress-text").textContent = `${job.state}: ${job.message}`;
  if (["done", "failed", "cancelled"].includes(job.state)) {
    clearInterval(state.timer); state.timer = null;
    $("compress-button").disabled = false; $("cancel-button").disabled = true;
    $("quantize-button").disabled = false;
    if (job.state === "done") (job.kind === "quantize" ? renderQuantized : renderResult)(job.result);
    if (job.state === "failed") showError(job.error);
    if (job.state === "cancelled") $("progress-text").textContent = "cancelled: " + job.message;
    document.body.dataset.job = job.state;
  }
}

async function guarded(action) {
  showError("");
  try { await action(); } catch (error) { showError(error.message); }
}

function bind() {
  $("refresh-button").onclick = () => guarded(() => refreshFiles());
  $("method-select").onchange = fillRecommendations;
  $("recommendation-select").onchange = updateMode;
  $("budget-select").onchange = updateMode;
  $("load-button").onclick = () => guarded(async () => {
    const h = $("input-h").value, w = $("input-w").value;
    $("load-button").disabled = true;
    try {
      const table = await postJSON("/api/model", {
        model: $("model-select").value, config: $("config-select").value,
        input_size: h && w ? [Number(h), Number(w)] : null,
      });
      $("input-h").value = table.input_size[0]; $("input-w").value = table.input_size[1];
      renderTable(table);
      document.body.dataset.step = "loaded";
    } finally { $("load-button").disabled = false; }
  });
  $("preview-button").onclick = () => guarded(async () => renderPreview(await postJSON("/api/preview", requestBody())));
  $("compress-button").onclick = () => guarded(async () => {
    const job = await postJSON("/api/jobs/compress", requestBody());
    state.job = job.id; $("result").hidden = true; $("progress").hidden = false;
    $("compress-button").disabled = true; $("cancel-button").disabled = false;
    document.body.dataset.job = job.state;
    state.timer = setInterval(() => guarded(poll), 300);
  });
  $("quantize-button").onclick = () => guarded(async () => {
    const job = await postJSON("/api/jobs/quantize", {
      run: state.run, calib_dir: $("calib-select").value, precision: $("precision-select").value,
      engine: $("engine-select").value,
    });
    state.job = job.id; $("quantize-result").hidden = true; $("progress").hidden = false;
    $("quantize-button").disabled = true; $("cancel-button").disabled = false;
    document.body.dataset.job = job.state;
    state.timer = setInterval(() => guarded(poll), 500);
  });
  $("cancel-button").onclick = () => guarded(() => api(`/api/jobs/${state.job}/cancel`, { method: "POST" }));
  $("upload-button").onclick = () => guarded(async () => {
    const file = $("upload-input").files[0];
    if (!file) throw new Error("choose a file to upload first");
    const form = new FormData();
    form.append("file", file);
    const saved = await api("/api/upload", { method: "POST", body: form });
    $("upload-note").textContent = "uploaded as " + saved.name;
    await refreshFiles(saved.name);
  });
}

async function init() {
  bind();
  await guarded(async () => {
    state.catalog = await api("/api/catalog");
    for (const m of state.catalog.methods) option($("method-select"), m.name, `${m.name} (${m.family})`);
    for (const r of state.catalog.runtimes) option($("runtime-select"), r);
    $("runtime-select").value = "eager";
    const quant = state.catalog.quantization;
    if (quant) {
      for (const p of quant.precisions || []) option($("precision-select"), p);
      for (const e of quant.engines || []) option($("engine-select"), e);
    }
    fillRecommendations();
    await refreshFiles();
    document.body.dataset.step = "ready";
  });
}

init();
