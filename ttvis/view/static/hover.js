// ttvis viewer: a uniform grid over screen positions, so that finding the sample under the
// cursor looks at the few points in the 3 x 3 cells around it, not at all N of them.
"use strict";

class GridIndex {
  // cell: side of a square cell in CSS pixels (at least the hover radius).
  constructor(cell) {
    this.cell = Math.max(1, cell);
    this.cols = 0;
    this.rows = 0;
    this.start = new Int32Array(1);
    this.items = new Int32Array(0);
    this.xs = null;
    this.ys = null;
  }

  // xs, ys: Float32Array screen positions (CSS px) of n points; keep(i): whether point i may
  // be found; width, height: the area (points outside it are left out). Counting sort: O(n).
  build(xs, ys, n, keep, width, height) {
    const cell = this.cell;
    this.cols = Math.max(1, Math.ceil(width / cell));
    this.rows = Math.max(1, Math.ceil(height / cell));
    const ncell = this.cols * this.rows;
    const cellOf = new Int32Array(n);
    const start = new Int32Array(ncell + 1);
    for (let i = 0; i < n; i++) {
      const cx = Math.floor(xs[i] / cell);
      const cy = Math.floor(ys[i] / cell);
      if (!keep(i) || cx < 0 || cy < 0 || cx >= this.cols || cy >= this.rows) {
        cellOf[i] = -1;
        continue;
      }
      const c = cy * this.cols + cx;
      cellOf[i] = c;
      start[c + 1]++;
    }
    for (let c = 0; c < ncell; c++) start[c + 1] += start[c];
    const fill = start.slice(0, ncell);
    const items = new Int32Array(start[ncell]);
    for (let i = 0; i < n; i++) {
      const c = cellOf[i];
      if (c >= 0) items[fill[c]++] = i;
    }
    this.start = start;
    this.items = items;
    this.xs = xs;
    this.ys = ys;
  }

  // The point nearest (x, y) within radius (CSS px), or -1.
  nearest(x, y, radius) {
    if (!this.xs) return -1;
    const cell = this.cell;
    const reach = Math.ceil(radius / cell);
    const cx = Math.floor(x / cell);
    const cy = Math.floor(y / cell);
    let best = -1;
    let bestD = radius * radius;
    for (let gy = Math.max(0, cy - reach); gy <= Math.min(this.rows - 1, cy + reach); gy++) {
      for (let gx = Math.max(0, cx - reach); gx <= Math.min(this.cols - 1, cx + reach); gx++) {
        const c = gy * this.cols + gx;
        for (let k = this.start[c]; k < this.start[c + 1]; k++) {
          const i = this.items[k];
          const dx = this.xs[i] - x;
          const dy = this.ys[i] - y;
          const d = dx * dx + dy * dy;
          if (d <= bestD) {
            bestD = d;
            best = i;
          }
        }
      }
    }
    return best;
  }
}

window.GridIndex = GridIndex;
