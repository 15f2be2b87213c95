// ttvis viewer: loads the data files the Python writer made (ttvis/view/encode.py), keeps the
// state (epoch, filters, hovered and pinned samples) and draws one panel per visualizer; what
// the user does with it is in controls.js.
// Data files are <script>s calling ttvisRegister(...), so the page works from file://.
"use strict";

const S = {
  manifest: null,
  loaded: 0,
  ready: false,
  errors: [],
  epochs: [],
  N: 0,
  F: 1,
  labels: null,
  split: null,
  pred: [], // per epoch index: Uint8Array/Uint16Array [N]
  conf: [], // per epoch index: Float32Array [N]
  pos: [], // per visualizer: per epoch index: Float32Array [2 N F]
  frame: 0, // epoch index, fractional while the animation runs
  playing: false,
  lastTick: 0,
  frameLog: [],
  hovered: -1,
  pinned: [],
  colourBy: "label",
  filter: { split: "all", wrong: false, labels: null, preds: null, index: null },
  visible: null, // Uint8Array [N]: passes the filters at the shown epoch
  styleEpoch: -1,
  panels: [],
  size: 300,
  zoom: { k: 1, cx: 0.5, cy: 0.5 }, // magnification and centre, in shares of the epoch's box
  drag: null, // {x, y, moved} while the mouse button is down on a panel
  view: 0, // bumped when what is on screen moves without the frame changing (zoom, filters)
};

window.addEventListener("error", (e) => S.errors.push(String(e.message || e)));

// ------------------------------------------------------------------ loading

const TYPED = { uint8: Uint8Array, uint16: Uint16Array, int32: Int32Array, float32: Float32Array };

function decode(a) {
  const bin = atob(a.b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TYPED[a.dtype](bytes.buffer);
}

function ttvisRegister(payload) {
  if (payload.kind === "manifest") return onManifest(payload);
  if (payload.kind === "samples") {
    S.labels = decode(payload.labels);
    S.split = decode(payload.split);
  } else if (payload.kind === "epoch") {
    const i = S.epochs.indexOf(payload.epoch);
    S.pred[i] = decode(payload.prediction);
    S.conf[i] = decode(payload.confidence);
    payload.positions.forEach((p, v) => (S.pos[v][i] = decode(p)));
  }
  S.loaded++;
  setStatus(`loading ${S.loaded} / ${S.manifest.files.length}`);
  if (S.loaded === S.manifest.files.length) onReady();
}
window.ttvisRegister = ttvisRegister;

function onManifest(m) {
  S.manifest = m;
  S.epochs = m.epochs;
  S.N = m.n_samples;
  S.F = m.n_features;
  S.pos = m.visualizers.map(() => []);
  document.title = "ttvis · " + m.title;
  buildPanels();
  buildControls();
  for (const file of m.files) {
    const script = document.createElement("script");
    script.src = file;
    script.onerror = () => fail(`${file}: could not be loaded; write the viewer again`);
    document.body.appendChild(script);
  }
}

function fail(message) {
  S.errors.push(message);
  setStatus(message, true);
}

function setStatus(text, error) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", !!error);
}

function onReady() {
  S.ready = true;
  setStatus(`${S.N.toLocaleString()} samples · ${S.epochs.length} epochs`);
  const slider = document.getElementById("epoch");
  slider.max = S.epochs.length - 1;
  layout();
  updateLegend();
  showList();
  setFrame(0);
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ panels and geometry

function buildPanels() {
  const root = document.getElementById("panels");
  S.panels = S.manifest.visualizers.map((vis, v) => {
    const el = document.createElement("div");
    el.className = "panel";
    el.innerHTML =
      '<div class="panel-title"></div><div class="stage"><div class="bgclip">' +
      '<img class="bg0" alt=""><img class="bg1" alt=""></div><canvas class="points"></canvas>' +
      '<canvas class="overlay"></canvas></div><div class="panel-metrics"></div>';
    el.querySelector(".panel-title").textContent = vis.name;
    root.appendChild(el);
    const stage = el.querySelector(".stage");
    const panel = {
      v, vis, el, stage,
      bg: [el.querySelector(".bg0"), el.querySelector(".bg1")],
      layer: new PointLayer(el.querySelector(".points"), S.manifest.page.renderer),
      overlay: el.querySelector(".overlay"),
      grid: new GridIndex(S.manifest.page.hover_radius),
      gridKey: null, xs: null, ys: null, shown: [-1, -1],
      images: {},
    };
    el.querySelector(".bgclip").style.opacity = S.manifest.page.background_opacity;
    for (const e of S.epochs) {
      const img = new Image(); // preloaded, so switching epochs never waits for a file
      img.src = vis.backgrounds[e];
      panel.images[e] = img;
    }
    stage.addEventListener("mousemove", (ev) => onMove(panel, ev));
    stage.addEventListener("mouseleave", () => setHovered(-1));
    stage.addEventListener("mousedown", (ev) => (S.drag = { x: ev.clientX, y: ev.clientY, moved: false }));
    stage.addEventListener("click", () => !S.drag?.moved && S.hovered >= 0 && togglePin(S.hovered));
    stage.addEventListener("wheel", (ev) => onWheel(panel, ev), { passive: false });
    stage.addEventListener("dblclick", () => zoomTo({ k: 1, cx: 0.5, cy: 0.5 }));
    return panel;
  });
  window.addEventListener("resize", () => S.ready && (layout(), render()));
  window.addEventListener("mouseup", () => setTimeout(() => (S.drag = null), 0));
}

function layout() {
  const bar = document.getElementById("bar").offsetHeight;
  const side = document.getElementById("side").offsetWidth;
  const n = S.panels.length;
  const width = (window.innerWidth - side - 30 - 10 * (n - 1)) / n;
  const height = window.innerHeight - bar - 90;
  S.size = Math.max(120, Math.floor(Math.min(width, height)));
  const dpr = window.devicePixelRatio || 1;
  for (const p of S.panels) {
    p.stage.style.width = p.stage.style.height = S.size + "px";
    for (const c of [p.layer.canvas, p.overlay]) {
      c.width = c.height = Math.round(S.size * dpr);
      c.style.width = c.style.height = S.size + "px";
    }
    p.el.querySelector(".panel-metrics").style.width = S.size + "px";
  }
  S.view++;
}

// The shown epochs (indices i0, i1), the weight t of i1, and each panel's box at S.frame.
function frameParts() {
  const last = S.epochs.length - 1;
  const i0 = Math.min(Math.floor(S.frame), last);
  const i1 = Math.min(i0 + 1, last);
  return { i0, i1, t: i1 === i0 ? 0 : S.frame - i0 };
}

function boxOf(panel, parts) {
  const a = panel.vis.scales[S.epochs[parts.i0]];
  const b = panel.vis.scales[S.epochs[parts.i1]];
  const [x0, y0, x1, y1] = a.map((x, k) => x + (b[k] - x) * parts.t);
  const { k, cx, cy } = S.zoom;
  const w = x1 - x0;
  const h = y1 - y0;
  return [x0 + (cx - 0.5 / k) * w, y0 + (cy - 0.5 / k) * h, x0 + (cx + 0.5 / k) * w, y0 + (cy + 0.5 / k) * h];
}

// Data (x, y) -> CSS px inside the panel's stage, for a box.
function toStage(box, x, y) {
  return [((x - box[0]) / (box[2] - box[0])) * S.size, ((box[3] - y) / (box[3] - box[1])) * S.size];
}

function pointAt(panel, parts, point) {
  const a = S.pos[panel.v][parts.i0];
  const b = S.pos[panel.v][parts.i1];
  const t = parts.t;
  return [a[2 * point] + (b[2 * point] - a[2 * point]) * t, a[2 * point + 1] + (b[2 * point + 1] - a[2 * point + 1]) * t];
}

// ------------------------------------------------------------------ drawing

function setFrame(frame) {
  S.frame = Math.max(0, Math.min(frame, S.epochs.length - 1));
  render();
}

function render() {
  if (!S.ready) return;
  const parts = frameParts();
  const shown = Math.round(S.frame);
  if (shown !== S.styleEpoch) updateStyle(shown);
  for (const panel of S.panels) {
    const box = boxOf(panel, parts);
    if (panel.shown[0] !== parts.i0 || panel.shown[1] !== parts.i1) {
      panel.layer.setPositions(S.pos[panel.v][parts.i0], S.pos[panel.v][parts.i1]);
      panel.shown = [parts.i0, parts.i1];
    }
    placeBackgrounds(panel, parts, box);
    const dpr = window.devicePixelRatio || 1;
    panel.layer.draw(parts.t, box, S.manifest.page.point_size * dpr);
    drawOverlay(panel, parts, box);
  }
  updateReadout(parts, shown);
}

function renderOverlays() {
  if (!S.ready) return;
  const parts = frameParts();
  for (const panel of S.panels) drawOverlay(panel, parts, boxOf(panel, parts));
}

function placeBackgrounds(panel, parts, box) {
  [parts.i0, parts.i1].forEach((i, k) => {
    const e = S.epochs[i];
    const img = panel.bg[k];
    const s = panel.vis.scales[e];
    const [left, top] = toStage(box, s[0], s[3]);
    const [right, bottom] = toStage(box, s[2], s[1]);
    if (img.getAttribute("src") !== panel.vis.backgrounds[e]) img.src = panel.vis.backgrounds[e];
    Object.assign(img.style, {
      left: left + "px", top: top + "px", width: right - left + "px", height: bottom - top + "px",
      opacity: k === 0 ? 1 : parts.t,
    });
  });
}

function hexColour(hex) {
  return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

// Colours, rings and the filter mask for the shown epoch (index i).
function updateStyle(i) {
  S.styleEpoch = i;
  const palette = S.manifest.palette.map(hexColour);
  const faded = Math.round(S.manifest.page.faded_alpha * 255);
  const pred = S.pred[i];
  const test = S.manifest.split_codes.test;
  const P = S.N * S.F;
  const colours = new Uint8Array(4 * P);
  const rings = new Float32Array(P);
  S.visible = new Uint8Array(S.N);
  let count = 0;
  for (let s = 0; s < S.N; s++) {
    const ok = passes(s, pred);
    S.visible[s] = ok ? 1 : 0;
    count += ok;
  }
  const byLabel = S.colourBy === "label";
  for (let p = 0; p < P; p++) {
    const s = Math.floor(p / S.F);
    const c = palette[byLabel ? S.labels[s] : pred[s]];
    colours[4 * p] = c[0];
    colours[4 * p + 1] = c[1];
    colours[4 * p + 2] = c[2];
    colours[4 * p + 3] = S.visible[s] ? 255 : faded;
    rings[p] = S.split[s] === test ? 1 : 0;
  }
  for (const panel of S.panels) panel.layer.setStyle(colours, rings);
  document.getElementById("count").textContent = `showing ${count.toLocaleString()} of ${S.N.toLocaleString()}`;
}

function passes(s, pred) {
  const f = S.filter;
  const codes = S.manifest.split_codes;
  if (f.split !== "all" && S.split[s] !== codes[f.split]) return false;
  if (f.wrong && pred[s] === S.labels[s]) return false;
  if (f.labels && !f.labels.has(S.labels[s])) return false;
  if (f.preds && !f.preds.has(pred[s])) return false;
  if (f.index && !f.index(s)) return false;
  return true;
}

function drawOverlay(panel, parts, box) {
  const ctx = panel.overlay.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, S.size, S.size);
  const page = S.manifest.page;
  for (const s of S.pinned) drawTrail(panel, ctx, s, box, parts, page);
  if (S.hovered >= 0) {
    for (let f = 0; f < S.F; f++) {
      const [x, y] = toStage(box, ...pointAt(panel, parts, S.hovered * S.F + f));
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(x, y, page.point_size + 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
}

function drawTrail(panel, ctx, s, box, parts, page) {
  const colour = S.manifest.palette[S.labels[s]];
  for (let f = 0; f < S.F; f++) {
    const point = s * S.F + f;
    const path = S.epochs.map((e, i) => {
      const a = S.pos[panel.v][i];
      return toStage(box, a[2 * point], a[2 * point + 1]);
    });
    ctx.lineWidth = page.trail_width + 2;
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    strokePath(ctx, path);
    ctx.lineWidth = page.trail_width;
    ctx.strokeStyle = colour;
    strokePath(ctx, path);
    ctx.fillStyle = colour;
    for (const [x, y] of path) ctx.fillRect(x - 2, y - 2, 4, 4);
    const [x, y] = toStage(box, ...pointAt(panel, parts, point));
    ctx.beginPath();
    ctx.arc(x, y, page.point_size + 3, 0, 2 * Math.PI);
    ctx.fill();
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
}

function strokePath(ctx, path) {
  ctx.beginPath();
  path.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
}

function fmt(v, digits = 3) {
  return v === null || v === undefined ? "-" : Number(v).toFixed(digits);
}

function updateReadout(parts, shown) {
  const e = S.epochs[shown];
  const moving = parts.t > 0 ? ` → ${S.epochs[parts.i1]}` : "";
  document.getElementById("epoch-label").textContent = `epoch ${S.epochs[parts.i0]}${moving}`;
  const acc = S.manifest.accuracy[e];
  document.getElementById("accuracy").textContent =
    `epoch ${e} accuracy: train ${fmt(acc.train)} · test ${fmt(acc.test)}`;
  const slider = document.getElementById("epoch");
  if (!S.playing || Number(slider.value) !== shown) slider.value = shown;
  for (const panel of S.panels) {
    const el = panel.el.querySelector(".panel-metrics");
    const row = panel.vis.metrics ? panel.vis.metrics[e] : null;
    el.textContent = row
      ? Object.entries(row).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")
      : panel.vis.metrics ? `no metrics for epoch ${e}` : "no metrics.json (run evaluate.py)";
  }
}

// ------------------------------------------------------------------ animation

function play(on) {
  S.playing = on;
  document.getElementById("play").innerHTML = on ? "&#10074;&#10074;" : "&#9654;";
  if (!on) return;
  if (S.frame >= S.epochs.length - 1) S.frame = 0;
  S.lastTick = performance.now();
  requestAnimationFrame(tick);
}

function tick(now) {
  if (!S.playing) return;
  const dt = now - S.lastTick;
  S.lastTick = now;
  S.frame += dt / S.manifest.page.epoch_ms;
  if (S.frame >= S.epochs.length - 1) {
    setFrame(S.epochs.length - 1);
    return play(false);
  }
  setFrame(S.frame);
  if (S.frameLog.length < 100000) S.frameLog.push([dt, performance.now() - now]);
  requestAnimationFrame(tick);
}

function step(delta) {
  play(false);
  const base = delta > 0 ? Math.floor(S.frame + 1e-9) : Math.ceil(S.frame - 1e-9);
  setFrame(base + delta);
}

// ------------------------------------------------------------------ test hook (read only)

window.ttvisView = {
  // The viewer's state as plain values.
  state() {
    const parts = S.ready ? frameParts() : null;
    return {
      ready: S.ready,
      errors: S.errors.slice(),
      epoch: S.ready ? S.epochs[Math.round(S.frame)] : null,
      frame: S.frame,
      playing: S.playing,
      hovered: S.hovered,
      pinned: S.pinned.slice(),
      zoom: { ...S.zoom },
      renderers: S.panels.map((p) => p.layer.mode), // "webgl" or "canvas"
      webglRenderer: webglInfo().renderer,
      boxes: S.ready ? S.panels.map((p) => boxOf(p, parts)) : [],
      visible: S.visible ? S.visible.reduce((a, b) => a + b, 0) : 0,
    };
  },
  // Viewport CSS px of data point (x, y) in panel v at the shown frame.
  dataToViewport(v, x, y) {
    const panel = S.panels[v];
    const rect = panel.stage.getBoundingClientRect();
    const [sx, sy] = toStage(boxOf(panel, frameParts()), x, y);
    return [rect.left + panel.stage.clientLeft + sx, rect.top + panel.stage.clientTop + sy];
  },
  // Data position of sample s's first point in panel v at the shown frame.
  position(v, s) {
    return pointAt(S.panels[v], frameParts(), s * S.F);
  },
  // [interval since the previous animation frame, time spent drawing this one] per frame
  // while playing, ms.
  frameTimes() {
    return S.frameLog.slice();
  },
};
