// ttvis viewer: draws one panel's points with WebGL where the browser renders it on a GPU, else
// by writing pixels into a 2-D canvas (faster than WebGL rendered in software; see
// chooseRenderer; index.html?renderer=webgl or ?renderer=canvas forces one).
// Positions stay in data coordinates; the shader interpolates two epochs' positions by t and
// maps the view box [x_min, y_min, x_max, y_max] onto the canvas (y up), so points and the
// background image (placed by the same box) agree.
"use strict";

const VERTEX_SHADER = `
attribute vec2 a_p0;
attribute vec2 a_p1;
attribute vec4 a_colour;
attribute float a_ring;
uniform float u_t;
uniform vec4 u_box;
uniform float u_size;
varying vec4 v_colour;
varying float v_ring;
void main() {
  vec2 p = mix(a_p0, a_p1, u_t);
  vec2 n = (p - u_box.xy) / (u_box.zw - u_box.xy);
  gl_Position = vec4(n * 2.0 - 1.0, 0.0, 1.0);
  gl_PointSize = u_size;
  v_colour = a_colour;
  v_ring = a_ring;
}`;

const FRAGMENT_SHADER = `
precision mediump float;
varying vec4 v_colour;
varying float v_ring;
void main() {
  vec2 d = gl_PointCoord * 2.0 - 1.0;
  float r = dot(d, d);
  if (r > 1.0) discard;
  if (v_ring > 0.5 && r < 0.3) discard;
  gl_FragColor = vec4(v_colour.rgb * v_colour.a, v_colour.a);
}`;

class PointLayer {
  // mode: "webgl", "canvas", or "auto" (WebGL unless the browser renders it in software, where
  // the canvas path is faster); the page's ?renderer=webgl|canvas overrides it.
  constructor(canvas, mode) {
    this.canvas = canvas;
    this.n = 0;
    this.mode = chooseRenderer(new URLSearchParams(window.location.search).get("renderer") || mode);
    const options = { antialias: false, preserveDrawingBuffer: true, alpha: true };
    this.gl = this.mode === "webgl" ? canvas.getContext("webgl", options) : null;
    this.webgl = !!this.gl;
    if (this.webgl) this._setupGL();
    else this.ctx = canvas.getContext("2d");
  }

  _compile(type, source) {
    const gl = this.gl;
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      throw new Error("shader: " + gl.getShaderInfoLog(shader));
    }
    return shader;
  }

  _setupGL() {
    const gl = this.gl;
    const program = gl.createProgram();
    gl.attachShader(program, this._compile(gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, this._compile(gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
      throw new Error("program: " + gl.getProgramInfoLog(program));
    }
    gl.useProgram(program);
    this.program = program;
    this.buffers = {};
    for (const name of ["a_p0", "a_p1", "a_colour", "a_ring"]) {
      this.buffers[name] = { buffer: gl.createBuffer(), loc: gl.getAttribLocation(program, name) };
    }
    this.uniforms = {};
    for (const name of ["u_t", "u_box", "u_size"]) {
      this.uniforms[name] = gl.getUniformLocation(program, name);
    }
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
  }

  _upload(name, data, size, type, normalized) {
    const gl = this.gl;
    const b = this.buffers[name];
    gl.bindBuffer(gl.ARRAY_BUFFER, b.buffer);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
    gl.enableVertexAttribArray(b.loc);
    gl.vertexAttribPointer(b.loc, size, type, normalized, 0, 0);
  }

  // p0, p1: Float32Array [2n] positions of the two epochs being shown.
  setPositions(p0, p1) {
    this.p0 = p0;
    this.p1 = p1;
    this.n = p0.length / 2;
    if (!this.webgl) return;
    this._upload("a_p0", p0, 2, this.gl.FLOAT, false);
    this._upload("a_p1", p1, 2, this.gl.FLOAT, false);
  }

  // colours: Uint8Array [4n] RGBA; rings: Float32Array [n], 1 draws a ring (test sample).
  setStyle(colours, rings) {
    this.colours = colours;
    this.rings = rings;
    if (!this.webgl) {
      // RGBA bytes as one little-endian uint32 per point, as ImageData stores a pixel
      this.packed = new Uint32Array(colours.buffer.slice(0));
      return;
    }
    this._upload("a_colour", colours, 4, this.gl.UNSIGNED_BYTE, true);
    this._upload("a_ring", rings, 1, this.gl.FLOAT, false);
  }

  // t: 0..1 between the two epochs; box: [x_min, y_min, x_max, y_max]; size: device px.
  draw(t, box, size) {
    if (!this.webgl) return this._draw2d(t, box, size);
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!this.n || !this.colours) return;
    gl.uniform1f(this.uniforms.u_t, t);
    gl.uniform4f(this.uniforms.u_box, box[0], box[1], box[2], box[3]);
    gl.uniform1f(this.uniforms.u_size, size);
    gl.drawArrays(gl.POINTS, 0, this.n);
  }

  // The canvas path: each point's pixels written into one ImageData (no per-point canvas
  // calls), a disc or a ring of the same size as WebGL's; the last point drawn wins a pixel.
  _draw2d(t, box, size) {
    const w = this.canvas.width;
    const h = this.canvas.height;
    if (!this.image || this.image.width !== w || this.image.height !== h) {
      this.image = this.ctx.createImageData(w, h);
      this.pixels = new Uint32Array(this.image.data.buffer);
    }
    const px = this.pixels;
    px.fill(0);
    if (this.n && this.colours) {
      const shapes = [discOffsets(size, 0, w), discOffsets(size, 0.3, w)];
      const sx = w / (box[2] - box[0]);
      const sy = h / (box[3] - box[1]);
      const p0 = this.p0;
      const p1 = this.p1;
      for (let i = 0; i < this.n; i++) {
        const x = Math.round((p0[2 * i] + (p1[2 * i] - p0[2 * i]) * t - box[0]) * sx);
        const y = Math.round((box[3] - p0[2 * i + 1] - (p1[2 * i + 1] - p0[2 * i + 1]) * t) * sy);
        if (x < 0 || y < 0 || x >= w || y >= h) continue;
        const shape = shapes[this.rings[i] > 0.5 ? 1 : 0];
        const centre = y * w + x;
        const colour = this.packed[i];
        for (let k = 0; k < shape.offsets.length; k++) {
          const xx = x + shape.dx[k];
          const yy = y + shape.dy[k];
          if (xx >= 0 && yy >= 0 && xx < w && yy < h) px[centre + shape.offsets[k]] = colour;
        }
      }
    }
    this.ctx.putImageData(this.image, 0, 0);
  }
}

// Pixel offsets of a disc of diameter size (device px) in an image of the given width, without
// the centre part r^2 < hole (as the fragment shader's ring); cached per (size, hole, width).
const DISCS = {};
function discOffsets(size, hole, width) {
  const key = `${size}|${hole}|${width}`;
  if (DISCS[key]) return DISCS[key];
  const r = size / 2;
  const dx = [];
  const dy = [];
  const offsets = [];
  for (let y = -Math.ceil(r); y <= Math.ceil(r); y++) {
    for (let x = -Math.ceil(r); x <= Math.ceil(r); x++) {
      const d = ((x + 0.5) * (x + 0.5) + (y + 0.5) * (y + 0.5)) / (r * r);
      if (d > 1 || d < hole) continue;
      dx.push(x);
      dy.push(y);
      offsets.push(y * width + x);
    }
  }
  DISCS[key] = { dx, dy, offsets };
  return DISCS[key];
}

// What the browser's WebGL is, probed once on a spare canvas: {available, renderer, software}.
let WEBGL_INFO = null;
function webglInfo() {
  if (WEBGL_INFO) return WEBGL_INFO;
  const gl = document.createElement("canvas").getContext("webgl");
  if (!gl) return (WEBGL_INFO = { available: false, renderer: "", software: false });
  const ext = gl.getExtension("WEBGL_debug_renderer_info");
  const renderer = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  const software = /swiftshader|llvmpipe|softpipe|software|basic render/i.test(renderer);
  const lose = gl.getExtension("WEBGL_lose_context");
  if (lose) lose.loseContext();
  return (WEBGL_INFO = { available: true, renderer, software });
}

// "webgl" or "canvas" for a requested mode ("auto", "webgl", "canvas"; "2d" = "canvas").
function chooseRenderer(mode) {
  const info = webglInfo();
  if (mode === "canvas" || mode === "2d" || !info.available) return "canvas";
  if (mode === "webgl") return "webgl";
  return info.software ? "canvas" : "webgl";
}

window.PointLayer = PointLayer;
window.webglInfo = webglInfo;
