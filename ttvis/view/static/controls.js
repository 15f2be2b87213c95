// ttvis viewer: what the user does — zoom and pan, hover and pins, filters, lists and keys.
// Shares the state S and the drawing functions of viewer.js (loaded before this file).
"use strict";

// ------------------------------------------------------------------ zoom and pan (all panels)

function zoomTo(zoom) {
  S.zoom = zoom;
  S.view++;
  render();
}

// The wheel zooms about the cursor: the box share under it stays under it.
function onWheel(panel, ev) {
  ev.preventDefault();
  const [mx, my] = stageXY(panel, ev);
  const { k, cx, cy } = S.zoom;
  const u = mx / S.size;
  const v = 1 - my / S.size;
  const k2 = Math.min(Math.max(k * Math.exp(-ev.deltaY * S.manifest.page.zoom_speed), 1), 1000);
  const qx = cx - 0.5 / k + u / k;
  const qy = cy - 0.5 / k + v / k;
  zoomTo({ k: k2, cx: qx - u / k2 + 0.5 / k2, cy: qy - v / k2 + 0.5 / k2 });
}

function onMove(panel, ev) {
  const d = S.drag;
  if (d && ev.buttons === 1) {
    const dx = ev.clientX - d.x;
    const dy = ev.clientY - d.y;
    if (d.moved || Math.abs(dx) + Math.abs(dy) > 3) {
      d.moved = true;
      d.x = ev.clientX;
      d.y = ev.clientY;
      const { k, cx, cy } = S.zoom;
      zoomTo({ k, cx: cx - dx / S.size / k, cy: cy + dy / S.size / k });
      return;
    }
  }
  onHover(panel, ev);
}

// CSS px of a mouse event inside the panel's stage (its border excluded).
function stageXY(panel, ev) {
  const rect = panel.stage.getBoundingClientRect();
  return [ev.clientX - rect.left - panel.stage.clientLeft, ev.clientY - rect.top - panel.stage.clientTop];
}

// ------------------------------------------------------------------ hover and pins

function onHover(panel, ev) {
  if (!S.ready) return;
  const [x, y] = stageXY(panel, ev);
  if (panel.gridKey !== `${S.frame}|${S.view}`) buildGrid(panel);
  const point = panel.grid.nearest(x, y, S.manifest.page.hover_radius);
  setHovered(point < 0 ? -1 : Math.floor(point / S.F), ev.clientX, ev.clientY);
}

function buildGrid(panel) {
  const parts = frameParts();
  const box = boxOf(panel, parts);
  const P = S.N * S.F;
  if (!panel.xs || panel.xs.length !== P) {
    panel.xs = new Float32Array(P);
    panel.ys = new Float32Array(P);
  }
  const a = S.pos[panel.v][parts.i0];
  const b = S.pos[panel.v][parts.i1];
  const t = parts.t;
  const sx = S.size / (box[2] - box[0]);
  const sy = S.size / (box[3] - box[1]);
  for (let p = 0; p < P; p++) { // toStage(pointAt(p)), without an array per point
    panel.xs[p] = (a[2 * p] + (b[2 * p] - a[2 * p]) * t - box[0]) * sx;
    panel.ys[p] = (box[3] - a[2 * p + 1] - (b[2 * p + 1] - a[2 * p + 1]) * t) * sy;
  }
  panel.grid.build(panel.xs, panel.ys, P, (p) => S.visible[Math.floor(p / S.F)] === 1, S.size, S.size);
  panel.gridKey = `${S.frame}|${S.view}`;
}

function describe(s) {
  const m = S.manifest;
  const i = Math.round(S.frame);
  const split = Object.keys(m.split_codes).find((k) => m.split_codes[k] === S.split[s]);
  const pred = S.pred[i][s];
  const mark = pred === S.labels[s] ? "" : "  (misclassified)";
  return (
    `#${s} · ${split}\nlabel: ${m.classes[S.labels[s]]}\n` +
    `prediction: ${m.classes[pred]} (confidence ${S.conf[i][s].toFixed(3)})${mark}\n` +
    `epoch ${S.epochs[i]}\npredicted over epochs: ${history(s)}`
  );
}

// Sample s's predictions over all epochs as runs: "cat (1-4) · dog (5-9) · cat (10)"; at most
// HISTORY_RUNS runs, then "…".
const HISTORY_RUNS = 6;
function history(s) {
  const runs = [];
  S.epochs.forEach((e, i) => {
    const c = S.pred[i][s];
    const last = runs[runs.length - 1];
    if (last && last.c === c) last.to = e;
    else runs.push({ c, from: e, to: e });
  });
  const text = runs.slice(0, HISTORY_RUNS).map(
    (r) => `${S.manifest.classes[r.c]} (${r.from === r.to ? r.from : r.from + "-" + r.to})`,
  );
  return text.join(" · ") + (runs.length > HISTORY_RUNS ? " · …" : "");
}

function setHovered(s, cx, cy) {
  const tip = document.getElementById("tooltip");
  if (s !== S.hovered) {
    S.hovered = s;
    renderOverlays(); // the points themselves do not change
  }
  if (s < 0) {
    tip.hidden = true;
    return;
  }
  tip.textContent = describe(s);
  tip.hidden = false;
  tip.style.left = cx + 14 + "px";
  tip.style.top = cy + 14 + "px";
}

function togglePin(s) {
  const at = S.pinned.indexOf(s);
  if (at >= 0) S.pinned.splice(at, 1);
  else S.pinned.push(s);
  updatePinned();
  render();
}

function updatePinned() {
  const ul = document.getElementById("pinned");
  ul.innerHTML = "";
  for (const s of S.pinned) {
    const li = document.createElement("li");
    li.textContent = `#${s} · ${S.manifest.classes[S.labels[s]]} (click to unpin)`;
    li.onclick = () => togglePin(s);
    ul.appendChild(li);
  }
  for (const li of document.querySelectorAll("#list li")) {
    li.classList.toggle("pinned", S.pinned.includes(Number(li.dataset.sample)));
  }
}

// ------------------------------------------------------------------ controls

// "3, cat" -> a Set of class indices (names or numbers); empty text -> null (no filter).
function parseClasses(text) {
  const items = text.split(",").map((t) => t.trim()).filter((t) => t);
  if (!items.length) return null;
  const names = S.manifest.classes;
  return new Set(items.map((t) => (names.includes(t) ? names.indexOf(t) : Number(t))));
}

// "7, 100-120" -> a test of sample indices; empty text -> null.
function parseIndices(text) {
  const ranges = text.split(",").map((t) => t.trim()).filter((t) => t).map((t) => {
    const [a, b] = t.split("-").map(Number);
    return [a, b === undefined ? a : b];
  });
  if (!ranges.length) return null;
  return (s) => ranges.some(([a, b]) => s >= a && s <= b);
}

function onFilter() {
  const f = S.filter;
  f.split = document.getElementById("f-split").value;
  f.wrong = document.getElementById("f-wrong").checked;
  f.labels = parseClasses(document.getElementById("f-labels").value);
  f.preds = parseClasses(document.getElementById("f-preds").value);
  f.index = parseIndices(document.getElementById("f-index").value);
  S.colourBy = document.getElementById("colour-by").value;
  S.styleEpoch = -1;
  S.view++;
  updateLegend();
  render();
}

function updateLegend() {
  const m = S.manifest;
  const el = document.getElementById("legend");
  el.innerHTML = "";
  if (m.classes.length > m.page.max_legend_classes) return;
  m.classes.forEach((name, c) => {
    const span = document.createElement("span");
    span.innerHTML = `<i style="background:${m.palette[c]}"></i>`;
    span.appendChild(document.createTextNode(name));
    span.title = "show only / also this label";
    span.classList.toggle("off", !!S.filter.labels && !S.filter.labels.has(c));
    span.onclick = () => {
      const input = document.getElementById("f-labels");
      const set = S.filter.labels || new Set();
      if (set.has(c)) set.delete(c);
      else set.add(c);
      input.value = [...set].sort((a, b) => a - b).map((k) => m.classes[k]).join(", ");
      onFilter();
    };
    el.appendChild(span);
  });
}

function listItems(kind) {
  const m = S.manifest;
  if (kind === "flips") return m.flips.map(([s, n]) => [s, `${n} flips`]);
  const v = Number(kind.slice("moves".length));
  return m.visualizers[v].moves.map(([s, d]) => [s, `path ${d.toFixed(2)}`]);
}

function showList() {
  const kind = document.getElementById("list-kind").value;
  const ol = document.getElementById("list");
  ol.innerHTML = "";
  for (const [s, text] of listItems(kind)) {
    const li = document.createElement("li");
    li.dataset.sample = s;
    li.textContent = `#${s} · ${S.manifest.classes[S.labels ? S.labels[s] : 0]} · ${text}`;
    li.onclick = () => togglePin(s);
    ol.appendChild(li);
  }
  updatePinned();
}

function buildControls() {
  const m = S.manifest;
  const kinds = document.getElementById("list-kind");
  kinds.add(new Option("prediction flips most", "flips"));
  m.visualizers.forEach((vis, v) => kinds.add(new Option(`moves most in ${vis.name}`, "moves" + v)));
  kinds.onchange = showList;
  kinds.title = "path: 2-D distance travelled over all epochs, in sides of each epoch's box";
  for (const id of ["f-split", "f-wrong", "colour-by"]) document.getElementById(id).onchange = onFilter;
  for (const id of ["f-labels", "f-preds", "f-index"]) document.getElementById(id).oninput = onFilter;
  const slider = document.getElementById("epoch");
  slider.oninput = () => {
    play(false);
    setFrame(Number(slider.value));
  };
  document.getElementById("play").onclick = (ev) => {
    play(!S.playing);
    ev.currentTarget.blur(); // so that space, which plays and pauses, does not click it too
  };
  document.addEventListener("keydown", onKey);
}

function onKey(ev) {
  const typing = ev.target.tagName === "SELECT" || (ev.target.tagName === "INPUT" && ev.target.type === "text");
  if (!S.ready || typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const last = S.epochs.length - 1;
  const actions = {
    ArrowRight: () => step(1),
    ArrowLeft: () => step(-1),
    " ": () => play(!S.playing),
    Home: () => (play(false), setFrame(0)),
    End: () => (play(false), setFrame(last)),
    Escape: () => ((S.pinned = []), updatePinned(), render()),
    0: () => zoomTo({ k: 1, cx: 0.5, cy: 0.5 }),
  };
  const action = actions[ev.key];
  if (!action) return;
  ev.preventDefault();
  action();
}
