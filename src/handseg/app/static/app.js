// The page of `handseg serve`: no build step, no libraries, works offline.
// Photos go to POST /api/segment (or /api/evaluate with their ground-truth mask), two at a
// time; each row shows the photo, the overlay and the mask as its answer arrives.
"use strict";

const PARALLEL = 2; // requests in flight from this page
const state = { items: [], masks: [], queue: [], running: 0, classes: ["background", "hand"] };
const $ = (id) => document.getElementById(id);

// ---- names and pairing ------------------------------------------------------------------
const stemOf = (name) => name.replace(/\.[^.]*$/, "");
const pairKey = (name) => stemOf(name).toLowerCase().replace(/[_\- ]?(mask|gt|label)$/, "");
const naturalKey = (s) => s.toLowerCase().split(/(\d+)/).map((p, i) => (i % 2 ? Number(p) : p));
function naturalCompare(a, b) {
  const x = naturalKey(a), y = naturalKey(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] < y[i]) return -1;
    if (x[i] > y[i]) return 1;
  }
  return x.length - y.length;
}

// Output names as `handseg predict` writes them: <stem>_mask.png, repeats get -1, -2, ...
function maskNames(items) {
  const used = new Set();
  return items.map((it) => {
    let name = stemOf(it.file.name), k = 0;
    const stem = name;
    while (used.has(name.toLowerCase())) name = `${stem}-${++k}`;
    used.add(name.toLowerCase());
    return `${name}_mask.png`;
  });
}

// Give each photo its mask: by name, else in natural order when the counts match.
function pairMasks() {
  const byKey = new Map(state.masks.map((m) => [pairKey(m.name), m]));
  let matched = state.items.filter((it) => byKey.has(pairKey(it.file.name))).length;
  const inOrder = matched === 0 && state.masks.length === state.items.length;
  const photos = [...state.items].sort((a, b) => naturalCompare(a.file.name, b.file.name));
  const masks = [...state.masks].sort((a, b) => naturalCompare(a.name, b.name));
  photos.forEach((it, i) => {
    const mask = inOrder ? masks[i] : byKey.get(pairKey(it.file.name));
    if (mask && mask !== it.maskFile) {
      it.maskFile = mask;
      schedule(it); // (re)score it now that its ground truth is here
    }
  });
  matched = state.items.filter((it) => it.maskFile).length;
  $("masks-count").textContent = state.masks.length
    ? `${state.masks.length} mask(s), ${matched} paired` : "";
}

// ---- the work queue -----------------------------------------------------------------------
function addPhotos(files) {
  const added = files.map((file) => ({ file, maskFile: null, result: null, status: "waiting", row: null, runs: 0 }));
  for (const it of added) {
    state.items.push(it);
    it.row = makeRow(it);
  }
  $("photos-count").textContent = `${state.items.length} photo(s)`;
  pairMasks(); // pairs (and schedules) the new photos that have a mask
  added.filter((it) => !it.maskFile).forEach(schedule);
}

function addMasks(files) {
  state.masks.push(...files);
  pairMasks();
  pump();
}

function schedule(it) {
  if (!state.queue.includes(it)) state.queue.push(it);
  it.status = "waiting";
  progress();
  pump();
}

function pump() {
  while (state.running < PARALLEL && state.queue.length) {
    const it = state.queue.shift();
    state.running++;
    process(it).finally(() => { state.running--; progress(); pump(); });
  }
}

async function process(it) {
  const run = ++it.runs; // a later run (its mask arrived meanwhile) wins over this one
  it.status = "working";
  const form = new FormData();
  form.append("image", it.file, it.file.name);
  let url = "/api/segment?format=json&overlay=true";
  if (it.maskFile) {
    form.append("mask", it.maskFile, it.maskFile.name);
    url = "/api/evaluate";
  }
  try {
    const r = await fetch(url, { method: "POST", body: form });
    const body = await r.json();
    if (run !== it.runs) return;
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    it.result = body;
    it.status = "done";
  } catch (e) {
    if (run !== it.runs) return;
    it.result = null;
    it.status = "error";
    it.error = String(e.message || e);
  }
  fillRow(it);
  summary();
}

function progress() {
  const n = state.items.length, done = state.items.filter((it) => it.status === "done" || it.status === "error").length;
  $("progress").max = Math.max(1, n);
  $("progress").value = done;
  const errors = state.items.filter((it) => it.status === "error").length;
  $("progress-text").textContent = n ? `${done} / ${n} done` + (errors ? `, ${errors} failed` : "") : "no photos yet";
  $("download").disabled = !state.items.some((it) => it.result);
}

// ---- the table ----------------------------------------------------------------------------
function cell(tr, cls) { const td = document.createElement("td"); if (cls) td.className = cls; tr.appendChild(td); return td; }

function makeRow(it) {
  const tr = document.createElement("tr");
  const name = cell(tr, "name");
  name.textContent = it.file.name;
  const img = document.createElement("img");
  img.src = URL.createObjectURL(it.file);
  img.alt = it.file.name;
  name.appendChild(img);
  for (const cls of ["overlay", "mask", "num share", "num iou", "num bf"]) cell(tr, cls).textContent = "…";
  $("results").tBodies[0].appendChild(tr);
  return tr;
}

const fmt = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–" : v.toFixed(4));

function fillRow(it) {
  const [, ov, mk, share, iou, bf] = it.row.cells;
  const r = it.result;
  if (!r) {
    ov.colSpan = 1;
    ov.className = "overlay error";
    ov.textContent = it.error;
    for (const c of [mk, share, iou, bf]) c.textContent = "";
    return;
  }
  ov.className = "overlay";
  ov.replaceChildren(image(`data:image/jpeg;base64,${r.overlay_jpeg}`, "overlay"));
  mk.replaceChildren(image(`data:image/png;base64,${r.mask_png}`, "mask"));
  share.textContent = `${(100 * r.hand_fraction).toFixed(1)} %`;
  iou.textContent = "hand_iou" in r ? fmt(r.hand_iou) : "";
  bf.textContent = "bf" in r ? fmt(r.bf) : "";
  iou.dataset.value = r.hand_iou ?? "";
  bf.dataset.value = r.bf ?? "";
}

function image(src, alt) { const i = document.createElement("img"); i.src = src; i.alt = alt; return i; }

// Set metrics as `handseg evaluate` computes them: hand IoU from counts summed over the set,
// BF the mean over photos of each photo's BF (undefined ones skipped).
function summary() {
  const scored = state.items.filter((it) => it.result && it.result.confusion);
  $("summary").hidden = scored.length === 0;
  if (!scored.length) return;
  const c = scored[0].result.confusion.length;
  const cm = Array.from({ length: c }, () => new Array(c).fill(0));
  for (const it of scored) it.result.confusion.forEach((row, i) => row.forEach((v, j) => { cm[i][j] += v; }));
  const k = state.classes.includes("hand") ? state.classes.indexOf("hand") : c - 1;
  const row = cm[k].reduce((a, b) => a + b, 0), col = cm.reduce((a, r) => a + r[k], 0);
  const union = row + col - cm[k][k];
  const iou = union > 0 ? cm[k][k] / union : null;
  const bfs = scored.map((it) => it.result.bf).filter((v) => v !== null && v !== undefined);
  const bf = bfs.length ? bfs.reduce((a, b) => a + b, 0) / bfs.length : null;
  $("set-n").textContent = String(scored.length);
  $("set-iou").textContent = fmt(iou);
  $("set-iou").dataset.value = iou ?? "";
  $("set-bf").textContent = fmt(bf);
  $("set-bf").dataset.value = bf ?? "";
}

// ---- the zip of masks (stored, no compression: PNGs are compressed already) ----------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function zip(files) { // files: [{name, bytes: Uint8Array}] -> Blob
  const enc = new TextEncoder(), parts = [], central = [];
  let offset = 0;
  for (const f of files) {
    const name = enc.encode(f.name), crc = crc32(f.bytes), n = f.bytes.length;
    const local = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [6, 0x0800, 2], [14, crc, 4], [18, n, 4], [22, n, 4], [26, name.length, 2]]
      .forEach(([at, v, size]) => (size === 4 ? local.setUint32(at, v, true) : local.setUint16(at, v, true)));
    const dir = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [8, 0x0800, 2], [16, crc, 4], [20, n, 4], [24, n, 4],
      [28, name.length, 2], [42, offset, 4]]
      .forEach(([at, v, size]) => (size === 4 ? dir.setUint32(at, v, true) : dir.setUint16(at, v, true)));
    parts.push(local, name, f.bytes);
    central.push(dir, name);
    offset += 30 + name.length + n;
  }
  const size = central.reduce((a, p) => a + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([at, v, s]) => (s === 4 ? end.setUint32(at, v, true) : end.setUint16(at, v, true)));
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

function downloadZip() {
  const names = maskNames(state.items);
  const files = [];
  state.items.forEach((it, i) => {
    if (!it.result) return;
    const bytes = Uint8Array.from(atob(it.result.mask_png), (ch) => ch.charCodeAt(0));
    files.push({ name: names[i], bytes });
  });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(zip(files));
  a.download = "handseg-masks.zip";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

// ---- webcam ---------------------------------------------------------------------------------
const cam = { stream: null, running: false, times: [], id: "" };

async function startCamera() {
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640 }, audio: false });
  } catch (e) {
    $("cam-fps").textContent = `no camera: ${e.message || e}`;
    return;
  }
  const video = $("cam-video");
  video.srcObject = cam.stream;
  await video.play();
  cam.running = true;
  cam.times = [];
  // one id per camera session: the server tracks the hands across its frames
  cam.id = `cam-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  $("cam-overlay").hidden = false;
  cameraLoop(video);
}

function stopCamera() {
  cam.running = false;
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  cam.stream = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
}

async function cameraLoop(video) {
  const canvas = document.createElement("canvas");
  while (cam.running) {
    const w = Math.min(640, video.videoWidth || 640);
    const h = Math.round(w * (video.videoHeight || 480) / (video.videoWidth || 640));
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(video, 0, 0, w, h);
    const blob = await new Promise((res) => canvas.toBlob(res, "image/jpeg", 0.85));
    const form = new FormData();
    form.append("image", blob, "frame.jpg");
    try {
      const r = await fetch(`/api/segment?format=json&overlay=true&stream=${cam.id}`, { method: "POST", body: form });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
      if (!cam.running) break;
      $("cam-overlay").src = `data:image/jpeg;base64,${body.overlay_jpeg}`;
    } catch (e) {
      $("cam-fps").textContent = `error: ${e.message || e}`;
      await new Promise((res) => setTimeout(res, 500));
      continue;
    }
    const now = performance.now();
    cam.times.push(now);
    while (cam.times.length > 2 && now - cam.times[0] > 3000) cam.times.shift();
    if (cam.times.length > 1) {
      const fps = (cam.times.length - 1) / ((now - cam.times[0]) / 1000);
      $("cam-fps").textContent = `${fps.toFixed(1)} frames/s`;
      $("cam-fps").dataset.value = fps;
    }
  }
}

// ---- the model card -----------------------------------------------------------------------
async function loadModel() {
  let facts;
  try {
    facts = await (await fetch("/api/model")).json();
  } catch (e) {
    $("model-line").textContent = "cannot reach the server";
    return;
  }
  state.classes = facts.classes || state.classes;
  $("model-line").textContent = `${facts.file || "no model file"}: ${facts.pipeline}` + (facts.runtime ? `, ${facts.runtime}` : "");
  const tc = facts.train_config || {};
  const test = facts.test_metrics || (facts.metrics || {}).test || null;
  const rows = [
    ["model file", facts.file || "none: the built-in hand detector pipeline"],
    ["pipeline", facts.pipeline],
    ["runtime", facts.runtime],
    ["classes", (facts.classes || []).join(", ")],
    ["input size (H x W)", facts.input_size && facts.input_size.join(" x ")],
    ["encoder", facts.architecture && facts.architecture.encoder_name],
    ["encoder initialised from", facts.backbone_weights],
    ["preset", tc.preset],
    ["trained on", tc.images && `${tc.images} (masks ${tc.masks})`],
    ["epochs", tc.epochs],
    ["test split", test && Object.entries(test).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(4)}`).join(", ")],
    ["handseg", facts.versions && facts.versions.handseg],
    ["upload limits", facts.limits && `${facts.limits.max_upload_mb} MB, ${facts.limits.max_megapixels} MP`],
  ];
  const dl = $("model-card");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    if (v === undefined || v === null || v === "") continue;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
  $("model-json").textContent = JSON.stringify(facts, null, 2);
}

// ---- wiring --------------------------------------------------------------------------------
function dropZone(zone, input, add) {
  input.addEventListener("change", () => { add([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    add([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/") || /\.(tiff?|bmp|webp)$/i.test(f.name)));
  });
}

function clearAll() {
  state.items = [];
  state.masks = [];
  state.queue = [];
  $("results").tBodies[0].replaceChildren();
  $("photos-count").textContent = "";
  $("masks-count").textContent = "";
  summary();
  progress();
}

window.addEventListener("DOMContentLoaded", () => {
  dropZone($("drop-photos"), $("photos"), addPhotos);
  dropZone($("drop-masks"), $("masks"), addMasks);
  $("download").addEventListener("click", downloadZip);
  $("clear").addEventListener("click", clearAll);
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  loadModel();
});
