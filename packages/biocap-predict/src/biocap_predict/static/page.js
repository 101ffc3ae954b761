// The demo page: send the chosen photo (or photos of one organism) to /api/predict and draw the
// answer.
// Plain DOM code, no framework or build step, so the page ships as package data and runs offline.
"use strict";

const $ = (id) => document.getElementById(id);
const RANK_TITLES = {kingdom: "Kingdom", phylum: "Phylum", class: "Class", order: "Order",
                     family: "Family", genus: "Genus", species: "Species"};
const ITALIC_RANKS = new Set(["genus", "species"]);  // the convention for scientific names

let photos = [];          // the Files being named: one photo, or several of one organism
let rollupAt = 0.8;       // the rollup line names the deepest rank at least this probable (/api/health)
let mode = "taxa";        // "taxa" (the index) or "labels" (typed by the user)
let maxUpload = Infinity; // bytes, from /api/health; the server enforces it too
let latest = 0;           // id of the newest request: an older answer arriving late is dropped

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function percent(score) {
  if (score > 0 && score < 0.001) return "<0.1%";
  return `${(100 * score).toFixed(score >= 0.9995 || score <= 0 ? 0 : 1)}%`;
}

function bar(score) {
  const fill = element("span", {className: "fill"});
  fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  return element("span", {className: "bar", "aria-hidden": "true"}, fill);
}

function scoreRow(name, detail, score, italic) {
  const label = element("td", {className: "name"}, italic ? element("i", {}, name) : name);
  if (detail) label.append(element("span", {className: "detail"}, detail));
  return element("tr", {}, label, element("td", {className: "bar-cell"}, bar(score)),
                 element("td", {className: "score"}, percent(score)));
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("taxa-results").hidden = true;
  $("labels-results").hidden = true;
  $("empty").hidden = true;
}

function clearMessages() {
  $("error").hidden = true;
  $("status").textContent = "";
}

function rollupLine(rollup) {
  // "confidently: genus Distrous (84%)": the most precise answer the model is that sure of
  if (!rollup) {
    return element("p", {className: "rollup"},
                   `not ${Math.round(100 * rollupAt)}% sure of any rank, not even the kingdom`);
  }
  return element("p", {className: "rollup"}, `confidently: ${rollup.rank} `,
                 ITALIC_RANKS.has(rollup.rank) ? element("i", {}, rollup.name) : rollup.name,
                 ` (${percent(rollup.score)})`);
}

function drawTaxa(result) {
  const ranks = $("ranks");
  ranks.replaceChildren();
  for (const {rank, predictions} of result.taxa) {
    const table = element("table", {className: "scores"});
    for (const p of predictions) {
      table.append(scoreRow(p.name, p.common_name, p.score, ITALIC_RANKS.has(rank)));
    }
    ranks.append(element("section", {className: "rank", "data-rank": rank},
                         element("h3", {}, RANK_TITLES[rank] || rank), table));
  }
  const finest = result.taxa[result.taxa.length - 1];
  const best = finest && finest.predictions[0];
  $("top").replaceChildren();
  if (best) {
    const lineage = result.taxa.slice(0, -1).map(({rank}) => best[rank]).filter(Boolean).join(" › ");
    $("top").append(
      element("p", {className: "verdict"}, "Most likely ",
              ITALIC_RANKS.has(finest.rank) ? element("i", {}, best.name) : best.name,
              best.common_name ? ` (${best.common_name})` : "",
              element("span", {className: "score"}, percent(best.score))),
      element("p", {className: "lineage"}, lineage), rollupLine(result.rollup));
  }
  const captions = $("captions");
  captions.replaceChildren(...result.captions.map(
    (c) => element("li", {}, element("span", {className: "caption"}, c.caption),
                   element("span", {className: "similarity", title: "cosine similarity"}, c.score.toFixed(3)))));
  $("compare-photo").src = $("preview").src;
  const references = result.references || [];
  $("references").replaceChildren(...references.map(
    (r) => element("figure", {className: "reference"},
                   element("img", {src: r.url, alt: `A reference photo of ${r.species}`}),
                   element("figcaption", {}, element("i", {}, r.species), ` ${r.score.toFixed(3)}`))));
  $("references").hidden = references.length === 0;
  $("captions-block").hidden = result.captions.length === 0 && references.length === 0;
  $("taxa-results").hidden = false;
}

function drawLabels(result) {
  $("labels-table").replaceChildren(...result.labels.map((l) => scoreRow(l.label, "", l.score, false)));
  $("labels-results").hidden = false;
}

async function detail(response) {
  // FastAPI answers errors with {"detail": "..."}; anything else (a proxy, a crash) gets its status line.
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch (_) { /* not JSON */ }
  return `The server answered ${response.status} ${response.statusText}.`;
}

async function run() {
  if (!photos.length) return;
  clearMessages();
  const size = photos.reduce((total, p) => total + p.size, 0);
  const names = photos.map((p) => p.name).join(", ");
  if (size > maxUpload) {
    showError(`${names} is too large (${(size / 2 ** 20).toFixed(1)} MB; ` +
              `the limit is ${(maxUpload / 2 ** 20).toFixed(0)} MB). Choose a smaller photo.`);
    return;
  }
  const form = new FormData();
  for (const p of photos) form.append("image", p, p.name);
  if (mode === "labels") {
    if (photos.length > 1) {
      showError("Custom labels take one photo at a time.");
      return;
    }
    if (!$("labels").value.trim()) {
      $("status").textContent = "Type some labels, one per line, then Classify.";
      $("labels").focus();
      return;
    }
    form.append("labels", $("labels").value);
  } else {
    form.append("rollup", String(rollupAt));
  }
  const id = ++latest;
  document.body.setAttribute("aria-busy", "true");
  $("status").textContent = `Looking at ${names}…`;
  let response;
  try {
    response = await fetch("api/predict", {method: "POST", body: form});
  } catch (err) {
    if (id === latest) {
      document.body.removeAttribute("aria-busy");
      showError(`Could not reach the server (${err.message}). Is biocap-predict serve still running?`);
    }
    return;
  }
  const result = response.ok ? await response.json() : null;
  const message = response.ok ? "" : await detail(response);
  if (id !== latest) return;
  document.body.removeAttribute("aria-busy");
  $("status").textContent = "";
  if (!result) {
    showError(message);
    return;
  }
  $("empty").hidden = true;
  $("taxa-results").hidden = true;
  $("labels-results").hidden = true;
  if (result.mode === "labels") drawLabels(result);
  else drawTaxa(result);
}

function choose(files) {
  // several photos at once are one observation: the server combines them into one answer
  const file = files && files[0];
  if (!file) return;
  photos = Array.from(files);
  $("file-name").textContent = photos.length > 1
    ? `${photos.length} photos of one organism: ${photos.map((p) => p.name).join(", ")}`
    : file.name;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = false;
  $("drop-hint").hidden = true;
  preview.src = URL.createObjectURL(file);
  run();
}

function setMode(next) {
  mode = next;
  $("tab-taxa").setAttribute("aria-selected", String(mode === "taxa"));
  $("tab-labels").setAttribute("aria-selected", String(mode === "labels"));
  $("labels-form").hidden = mode !== "labels";
  if (mode === "labels" && !$("labels").value.trim()) {
    clearMessages();
    $("labels").focus();
  } else {
    run();
  }
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => choose(e.target.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files);
  });
  // A file the browser cannot draw gets no preview; the server's message says why.
  $("preview").addEventListener("error", () => { $("preview").hidden = true; $("drop-hint").hidden = false; });
  $("tab-taxa").addEventListener("click", () => setMode("taxa"));
  $("tab-labels").addEventListener("click", () => setMode("labels"));
  $("labels-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  fetch("api/health").then((r) => r.json()).then((health) => {
    maxUpload = health.max_upload_bytes;
    if (health.rollup) rollupAt = health.rollup;
    $("model").textContent = [health.model && `model ${health.model}`, `${health.taxa} taxa`,
                              health.captions ? "trait captions" : "no trait captions"].filter(Boolean).join(" · ");
  }).catch(() => showError("Could not reach the server. Is biocap-predict serve still running?"));
}

init();
