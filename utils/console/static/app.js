"use strict";
// The console page: plain JS over the JSON API of utils/console/app.py (no build step).
const $ = (id) => document.getElementById(id);
const state = { catalog: null, table: null, job: null, timer: null, run: null };
// Layer table columns, by name (the manual input goes into the last one).
const COLUMNS = ["name", "kind", "in", "out", "params", "macs", "l2", "gm", "nn", "vbmf", "group",
  "kept_in", "kept_out", "macs_after", "manual"];
const col = (name) => COLUMNS.indexOf(name);

function fmt(value, unit = "") {
  if (value === null || value === undefined) return "-";
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [factor, suffix] of steps) {
    if (Math.abs(value) >= factor) return (value / factor).toFixed(2) + " " + suffix + unit;
  }
  return String(Math.round(value * 100) / 100) + (unit ? " " + unit : "");
}

const db = (value) => (value === null || value === undefined ? "inf" : value.toFixed(1) + " dB");
const pct = (value) => (value === null || value === undefined ? "-" : (100 * value).toFixed(2) + "%");
const score = (value) => (value === null || value === undefined ? "-" : value.toFixed(3));

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

function fillSelect(select, items, value, label, first) {
  const keep = select.value;
  select.innerHTML = "";
  if (first) option(select, "", first);
  for (const item of items) option(select, value(item), label ? label(item) : value(item));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
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

// A table from rows of cells; the first row is the header. rowClass(i) may name a class per body row.
function fillTable(table, rows, rowClass) {
  table.innerHTML = "";
  rows.forEach((cells, i) => {
    const tr = document.createElement("tr");
    if (i > 0 && rowClass) tr.className = rowClass(i - 1) || "";
    for (const text of cells) {
      const td = document.createElement(i === 0 ? "th" : "td");
      td.textContent = text === null || text === undefined ? "-" : text;
      tr.appendChild(td);
    }
    table.appendChild(tr);
  });
}

function downloadLink(file) {
  return "/api/download/" + file.split("/").map(encodeURIComponent).join("/");
}

// Files of a job result as download links; the report link gets an id for the tests.
function fillDownloads(list, files, report, reportId) {
  list.innerHTML = "";
  for (const file of files) {
    const li = document.createElement("li"), a = document.createElement("a");
    a.href = downloadLink(file);
    a.textContent = file; a.setAttribute("download", "");
    if (file === report && reportId) a.id = reportId;
    li.appendChild(a); list.appendChild(li);
  }
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
  const models = $("model-select");
  fillSelect(models, files.models, (m) => m.name, (m) => `${m.name} (${m.kind}, ${fmt(m.size, "B")})`);
  if (select && [...models.options].some((o) => o.value === select)) models.value = select;
  fillSelect($("config-select"), files.configs, (c) => c.name, null, "(none: exported module)");
  fillSelect($("eval-config-select"), files.configs, (c) => c.name);
  fillSelect($("eval-root-select"), files.dataset_roots, (r) => r.name, null, "(the config's DATASET.ROOT)");
  const folder = (f) => f.name, folderLabel = (f) => `${f.name} (${f.images} images)`;
  fillSelect($("calib-select"), files.image_folders, folder, folderLabel);
  fillSelect($("images-select"), files.image_folders, folder, folderLabel, "(none)");
  fillSelect($("qreport-select"), files.quantize_reports, (r) => r.name);
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

function vbmfText(vbmf) {
  if (!vbmf) return "-";
  const short = vbmf.method.replace("FD_", "");
  return `${short} ${JSON.stringify(vbmf.rank)} / ${JSON.stringify(vbmf.full)}`;
}

function renderTable(table) {
  state.table = table;
  const body = document.querySelector("#layer-table tbody");
  body.innerHTML = "";
  for (const row of table.layers) {
    const tr = document.createElement("tr");
    tr.dataset.name = row.name;
    if (!row.prunable) tr.className = "fixed";
    const cells = {
      name: row.name, kind: row.kind, in: row.in, out: row.out, params: fmt(row.params), macs: fmt(row.macs),
      l2: score(row.l2), gm: score(row.gm), nn: score(row.nn), vbmf: vbmfText(row.vbmf),
      group: row.prunable ? (row.root ? row.group : "↳ " + row.group) : (row.reason ? "fixed" : ""),
    };
    for (const name of COLUMNS) {
      const td = document.createElement("td");
      const text = cells[name];
      td.textContent = text === null || text === undefined ? (name in cells ? "-" : "") : text;
      if (name === "group") td.className = "left";
      tr.appendChild(td);
    }
    if (!row.prunable && row.reason) tr.children[col("group")].title = row.reason;
    if (row.in !== null && row.in !== undefined) {
      const input = document.createElement("input");
      input.className = "manual"; input.dataset.layer = row.name; input.type = "text";
      input.dataset.pruning = row.prunable && row.root ? "yes" : "no";
      tr.children[col("manual")].appendChild(input);
    }
    body.appendChild(tr);
  }
  const totals = $("totals");
  totals.innerHTML = "";
  card(totals, "parameters", fmt(table.totals.params), "total-params");
  card(totals, `MACs @ ${table.input_size[0]}x${table.input_size[1]}`, fmt(table.totals.macs), "total-macs");
  card(totals, "layers", table.totals.layers);
  card(totals, "prunable groups / filters", `${table.totals.prunable_groups} / ${table.totals.prunable_filters}`);
  card(totals, "layers with a VBMF rank", table.totals.vbmf_layers, "total-vbmf");
  if (table.totals.nn_images) card(totals, "NN importance over", `${table.totals.nn_images} images`, "total-nn");
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
    manual, runtime: $("runtime-select").value, images: $("images-select").value,
  };
}

function renderPreview(preview) {
  for (const tr of document.querySelectorAll("#layer-table tbody tr")) {
    const row = preview.layers[tr.dataset.name];
    const cells = tr.children;
    if (!row) continue;
    const ranked = row.ranks !== undefined;
    cells[col("kept_in")].textContent = row.in ? row.in[1] : (ranked ? "rank" : "-");
    cells[col("kept_out")].textContent = row.out ? row.out[1] : (ranked ? String(row.ranks) +
      (row.vbmf_ranks !== undefined ? ` (vbmf ${row.vbmf_ranks})` : "") : "-");
    cells[col("macs_after")].textContent = fmt(row.macs[1]);
    cells[col("macs_after")].title = row.reason || "";
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

// A quantize_report.json as the page shows it (utils/console/quantize.py quantize_view).
function renderQuantView(view) {
  const snr = $("quantize-snr");
  snr.innerHTML = "";
  for (const [runtime, value] of Object.entries(view.overall_snr_db)) {
    card(snr, `logits SNR, ${runtime}`, db(value), `snr-${runtime}`);
  }
  card(snr, "layers kept in float", String(view.float_layers.length), "float-count");
  if (view.mixed) card(snr, "min SNR asked / reached", `${view.mixed.min_snr_db} / ${view.mixed.reached_snr_db} dB`);
  fillTable($("quantize-summary"), [["field", "value"],
    ...Object.entries(view.fields).map(([k, v]) => [k, typeof v === "number" ? fmt(v) : String(v)]),
    ...Object.entries(view.sizes_bytes).map(([k, v]) => [`size (${k})`, fmt(v, "B")])]);
  fillTable($("quantize-layers"), [["layer", "SNR (dB)", "kept in float"],
    ...view.layers.map((l) => [l.name, l.snr_db === null ? "inf" : l.snr_db.toFixed(2), l.float ? "yes" : ""])],
  (i) => (view.layers[i].float ? "float" : ""));
  $("quantize-layers-wrap").hidden = !view.layers.length;
  $("quantize-layers-note").textContent = view.layers.length ? `${view.layers.length} layers measured` :
    "no per-layer sensitivity measured: set a min SNR (tools/quantize.py --mixed) to measure every layer";
  $("quantize-downloads").innerHTML = ""; $("quantize-command").textContent = "";
  $("quantize-result").hidden = false;
}

// What a finished job of each kind shows; each returns the step the page is then at.
const RENDER = {
  compress(result) {
    const speedup = result.before.latency_ms / result.after.latency_ms;
    fillTable($("comparison"), [["", "before", "after", "after / before"],
      ["parameters", fmt(result.before.params), fmt(result.after.params),
        (result.after.params / result.before.params).toFixed(3)],
      [`MACs @ ${result.input_size[0]}x${result.input_size[1]}`, fmt(result.before.macs), fmt(result.after.macs),
        (result.after.macs / result.before.macs).toFixed(3)],
      [`CPU latency (${result.runtime}, ms)`, result.before.latency_ms.toFixed(2),
        result.after.latency_ms.toFixed(2), (1 / speedup).toFixed(3)]]);
    fillDownloads($("downloads"), result.files, result.report, "report-link");
    $("command").textContent = result.commands.join("\n");
    $("result").hidden = false;
    state.run = result.run;
    $("step-quantize").hidden = !state.catalog.quantization;
    $("step-evaluate").hidden = false;
    return "compressed";
  },
  quantize(result) {
    renderQuantView(result.view);
    fillDownloads($("quantize-downloads"), result.files, result.report, "quantize-report-link");
    $("quantize-command").textContent = result.commands.join("\n");
    return "quantized";
  },
  evaluate(result) {
    fillTable($("evaluate-table"), [["model", "mIoU", "pixel acc", `CPU latency (ms)`, "runtime", "file size",
      "Pareto front"], ...result.rows.map((r) => [r.label, pct(r.miou), pct(r.pixel_acc),
      r.latency_ms.toFixed(2), r.runtime, fmt(r.size_bytes, "B"), r.pareto ? "yes" : ""])],
    (i) => (result.rows[i].pareto ? "front" : ""));
    const chart = $("evaluate-chart");
    chart.hidden = !result.chart;
    if (result.chart) chart.src = downloadLink(result.chart) + "?t=" + Date.now();
    fillDownloads($("evaluate-downloads"), result.files, result.report, "evaluate-report-link");
    $("evaluate-command").textContent = result.commands.join("\n");
    $("evaluate-result").hidden = false;
    return "evaluated";
  },
};
const JOB_BUTTONS = ["compress-button", "quantize-button", "evaluate-button"];

async function poll() {
  const job = await api(`/api/jobs/${state.job}`);
  $("progress-bar").value = job.progress;
  $("progress-text").textContent = `${job.label} - ${job.state}: ${job.message}`;
  if (["done", "failed", "cancelled"].includes(job.state)) {
    clearInterval(state.timer); state.timer = null;
    for (const id of JOB_BUTTONS) $(id).disabled = false;
    $("cancel-button").disabled = true;
    if (job.state === "done") {
      const step = RENDER[job.kind](job.result);
      await refreshFiles();  // the run's new files appear in the pickers
      document.body.dataset.step = step;
    }
    if (job.state === "failed") showError(job.error);
    if (job.state === "cancelled") $("progress-text").textContent = "cancelled: " + job.message;
    document.body.dataset.job = job.state;
  }
}

// Submit a job, hide the result box it will refill, and poll it until it finishes.
async function startJob(kind, body, resultBox) {
  const job = await postJSON(`/api/jobs/${kind}`, body);
  state.job = job.id;
  $(resultBox).hidden = true; $("progress").hidden = false;
  for (const id of JOB_BUTTONS) $(id).disabled = true;
  $("cancel-button").disabled = false;
  document.body.dataset.job = job.state;
  state.timer = setInterval(() => guarded(poll), 300);
}

async function guarded(action) {
  showError("");
  try { await action(); } catch (error) { showError(error.message); }
}

function bind() {
  const on = (id, action) => { $(id).onclick = () => guarded(action); };
  on("refresh-button", () => refreshFiles());
  $("method-select").onchange = fillRecommendations;
  $("recommendation-select").onchange = updateMode;
  $("budget-select").onchange = updateMode;
  on("load-button", async () => {
    const h = $("input-h").value, w = $("input-w").value;
    $("load-button").disabled = true;
    try {
      const table = await postJSON("/api/model", {
        model: $("model-select").value, config: $("config-select").value, images: $("images-select").value,
        input_size: h && w ? [Number(h), Number(w)] : null,
      });
      $("input-h").value = table.input_size[0]; $("input-w").value = table.input_size[1];
      renderTable(table);
      document.body.dataset.step = "loaded";
    } finally { $("load-button").disabled = false; }
  });
  on("preview-button", async () => renderPreview(await postJSON("/api/preview", requestBody())));
  on("compress-button", () => startJob("compress", requestBody(), "result"));
  on("quantize-button", () => startJob("quantize", {
    run: state.run, calib_dir: $("calib-select").value, precision: $("precision-select").value,
    engine: $("engine-select").value,
    min_snr: $("min-snr-input").value === "" ? null : Number($("min-snr-input").value),
  }, "quantize-result"));
  on("evaluate-button", () => startJob("evaluate", {
    run: state.run, config: $("eval-config-select").value, dataset_root: $("eval-root-select").value,
    runtime: $("eval-runtime-select").value,
  }, "evaluate-result"));
  on("qreport-button", async () => {
    renderQuantView(await api("/api/quantize-report/" + $("qreport-select").value.split("/")
      .map(encodeURIComponent).join("/")));
    document.body.dataset.step = "report";
  });
  on("cancel-button", () => api(`/api/jobs/${state.job}/cancel`, { method: "POST" }));
  on("upload-button", async () => {
    const file = $("upload-input").files[0];
    if (!file) throw new Error("choose a file to upload first");
    const form = new FormData();
    form.append("file", file);
    const saved = await api("/api/upload", { method: "POST", body: form });
    $("upload-note").textContent = "uploaded as " + saved.name;
    await refreshFiles(saved.name);
    const folder = saved.name.slice(0, saved.name.lastIndexOf("/"));
    if ([...$("images-select").options].some((o) => o.value === folder)) $("images-select").value = folder;
  });
}

async function init() {
  bind();
  await guarded(async () => {
    state.catalog = await api("/api/catalog");
    for (const m of state.catalog.methods) option($("method-select"), m.name, `${m.name} (${m.family})`);
    for (const r of state.catalog.runtimes) {
      option($("runtime-select"), r); option($("eval-runtime-select"), r);
    }
    $("runtime-select").value = "eager";
    // Evaluated ONNX files run on onnxruntime: time the bodies with it too, where it is offered.
    if (state.catalog.runtimes.includes("onnxruntime")) $("eval-runtime-select").value = "onnxruntime";
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
