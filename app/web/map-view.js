// The metric map: the environment's picture (or a metre grid), camera footprints, each person's fused
// position and a fading trail. Hovering or clicking a person highlights them everywhere (onHighlight).
import { colourOf } from "./colours.js";

const TRAIL_S = 8;

export class MapView {
  constructor(canvas, onHighlight) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onHighlight = onHighlight;
    this.env = null;
    this.image = null;
    this.footprints = [];
    this.people = new Map();  // global id -> {x, y, t, trail: [{x, y, t}]}
    this.now = 0;
    this.highlight = null;
    this.pinned = false;
    canvas.addEventListener("mousemove", (e) => { if (!this.pinned) this.pick(e); });
    canvas.addEventListener("click", (e) => { this.pinned = false; this.pick(e); this.pinned = this.highlight !== null; });
    canvas.addEventListener("mouseleave", () => { if (!this.pinned) this.setHighlight(null); });
  }

  setEnvironment(env, cameras) {
    this.env = env;
    this.people.clear();
    this.footprints = cameras.map((c) => c.footprint_m || []);
    const aspect = env.map_height_m / env.map_width_m;
    this.canvas.width = 800;
    this.canvas.height = Math.max(200, Math.round(800 * aspect));
    this.image = null;
    if (env.map_image_url) {
      const img = new Image();
      img.onload = () => { this.image = img; this.render(); };
      img.src = env.map_image_url;
    }
    this.render();
  }

  toCanvas(x, y) {
    const e = this.env;
    const s = this.canvas.width / e.map_width_m;
    return [(x - e.map_origin_m[0]) * s, (y - e.map_origin_m[1]) * s];
  }

  onTracks(update) {
    const t = update.timestamp_video_s;
    this.now = t;
    const sums = new Map();
    for (const cam of Object.values(update.cameras)) {
      for (const tr of cam.tracks) {
        if (!tr.map_coords) continue;
        const s = sums.get(tr.global_id) || { x: 0, y: 0, n: 0 };
        s.x += tr.map_coords[0]; s.y += tr.map_coords[1]; s.n += 1;
        sums.set(tr.global_id, s);
      }
    }
    for (const [gid, s] of sums) {
      const p = this.people.get(gid) || { trail: [] };
      p.x = s.x / s.n; p.y = s.y / s.n; p.t = t;
      p.trail.push({ x: p.x, y: p.y, t });
      while (p.trail.length && t - p.trail[0].t > TRAIL_S) p.trail.shift();
      this.people.set(gid, p);
    }
    for (const [gid, p] of this.people) if (t - p.t > TRAIL_S || t < p.t) this.people.delete(gid);
    this.render();
  }

  visible() {
    return [...this.people].filter(([, p]) => p.t === this.now);
  }

  render() {
    const { ctx, canvas, env } = this;
    ctx.fillStyle = "#0c0f12";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!env) return;
    if (this.image) {
      ctx.globalAlpha = 0.8;
      ctx.drawImage(this.image, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    } else {
      this.grid();
    }
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.fillStyle = "rgba(255,255,255,0.05)";
    ctx.lineWidth = 1;
    for (const poly of this.footprints) {
      if (poly.length < 3) continue;
      ctx.beginPath();
      poly.forEach(([x, y], i) => { const [u, v] = this.toCanvas(x, y); i ? ctx.lineTo(u, v) : ctx.moveTo(u, v); });
      ctx.closePath(); ctx.fill(); ctx.stroke();
    }
    for (const [gid, p] of this.people) {
      const colour = colourOf(gid);
      for (let i = 1; i < p.trail.length; i++) {
        const a = p.trail[i - 1], b = p.trail[i];
        ctx.globalAlpha = Math.max(0.05, 1 - (this.now - b.t) / TRAIL_S) * 0.8;
        ctx.strokeStyle = colour; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.moveTo(...this.toCanvas(a.x, a.y)); ctx.lineTo(...this.toCanvas(b.x, b.y)); ctx.stroke();
      }
      ctx.globalAlpha = 1;
    }
    const shown = this.visible();
    for (const [gid, p] of shown) {
      const [u, v] = this.toCanvas(p.x, p.y);
      ctx.fillStyle = colourOf(gid);
      ctx.beginPath(); ctx.arc(u, v, gid === this.highlight ? 9 : 6, 0, 2 * Math.PI); ctx.fill();
      ctx.fillStyle = "#fff"; ctx.font = "12px system-ui, sans-serif"; ctx.fillText(`#${gid}`, u + 8, v - 6);
    }
    canvas.dataset.persons = String(shown.length);
  }

  grid() {
    const { ctx, env } = this;
    const step = env.map_width_m > 60 ? 10 : env.map_width_m > 15 ? 5 : 1;
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.fillStyle = "rgba(255,255,255,0.35)";
    ctx.font = "10px system-ui, sans-serif";
    const [x0, y0] = env.map_origin_m;
    for (let x = Math.ceil(x0 / step) * step; x <= x0 + env.map_width_m; x += step) {
      const [u] = this.toCanvas(x, y0);
      ctx.beginPath(); ctx.moveTo(u, 0); ctx.lineTo(u, this.canvas.height); ctx.stroke();
      ctx.fillText(`${x} m`, u + 2, 10);
    }
    for (let y = Math.ceil(y0 / step) * step; y <= y0 + env.map_height_m; y += step) {
      const [, v] = this.toCanvas(x0, y);
      ctx.beginPath(); ctx.moveTo(0, v); ctx.lineTo(this.canvas.width, v); ctx.stroke();
    }
  }

  pick(event) {
    const r = this.canvas.getBoundingClientRect();
    const u = (event.clientX - r.left) * (this.canvas.width / r.width);
    const v = (event.clientY - r.top) * (this.canvas.height / r.height);
    let best = null, bestD = 15 * 15;
    for (const [gid, p] of this.visible()) {
      const [x, y] = this.toCanvas(p.x, p.y);
      const d = (x - u) ** 2 + (y - v) ** 2;
      if (d < bestD) { best = gid; bestD = d; }
    }
    this.setHighlight(best);
  }

  setHighlight(gid) {
    if (gid === this.highlight) return;
    this.highlight = gid;
    this.onHighlight(gid);
    this.render();
  }
}
