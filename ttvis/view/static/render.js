// ttvis viewer: draws one panel's points, WebGL where the browser has it, else a 2-D canvas
// (slower; index.html?renderer=2d forces it).
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
  constructor(canvas) {
    this.canvas = canvas;
    this.n = 0;
    const options = { antialias: false, preserveDrawingBuffer: true, alpha: true };
    const forced2d = new URLSearchParams(window.location.search).get("renderer") === "2d";
    this.gl = forced2d ? null : canvas.getContext("webgl", options);
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
    if (!this.webgl) return;
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

  _draw2d(t, box, size) {
    const ctx = this.ctx;
    const w = this.canvas.width;
    const h = this.canvas.height;
    ctx.clearRect(0, 0, w, h);
    if (!this.n || !this.colours) return;
    const sx = w / (box[2] - box[0]);
    const sy = h / (box[3] - box[1]);
    const c = this.colours;
    for (let i = 0; i < this.n; i++) {
      const x = (this.p0[2 * i] + (this.p1[2 * i] - this.p0[2 * i]) * t - box[0]) * sx;
      const y = (box[3] - (this.p0[2 * i + 1] + (this.p1[2 * i + 1] - this.p0[2 * i + 1]) * t)) * sy;
      ctx.fillStyle = `rgba(${c[4 * i]},${c[4 * i + 1]},${c[4 * i + 2]},${c[4 * i + 3] / 255})`;
      ctx.strokeStyle = ctx.fillStyle;
      if (this.rings[i] > 0.5) ctx.strokeRect(x - size / 2, y - size / 2, size, size);
      else ctx.fillRect(x - size / 2, y - size / 2, size, size);
    }
  }
}

window.PointLayer = PointLayer;
