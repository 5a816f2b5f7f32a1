// Camera tiles: each binary frame is held until the tracking_update of its frame_index arrives (the server
// sends it right after the frames of a global frame), then drawn with its boxes. A frame superseded before
// its tracks arrive is drawn without boxes, so nothing waits forever.
import { colourOf } from "./colours.js";

export class CameraGrid {
  constructor(root) {
    this.root = root;
    this.tiles = new Map();
    this.highlight = null;
  }

  setCameras(cameras) {
    this.root.replaceChildren();
    this.tiles.clear();
    for (const cam of cameras) {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.testid = "camera-tile";
      tile.dataset.cameraId = cam.id;
      tile.dataset.frames = "0";
      const canvas = document.createElement("canvas");
      canvas.width = cam.width;
      canvas.height = cam.height;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = cam.name || cam.id;
      tile.append(canvas, label);
      this.root.append(tile);
      this.tiles.set(cam.id, { tile, canvas, ctx: canvas.getContext("2d"), pending: null, last: null });
    }
  }

  onFrame(frame) {
    const t = this.tiles.get(frame.cameraId);
    if (!t) return;
    if (t.pending) this.flush(t, t.pending, []);
    // decoding is asynchronous: the frame is pending at once, so its tracks find it even before it is decoded
    t.pending = { frameIndex: frame.frameIndex, bitmap: createImageBitmap(frame.jpeg) };
  }

  flush(t, pending, tracks) {
    pending.bitmap.then((bitmap) => this.draw(t, bitmap, tracks), () => {});
  }

  onTracks(cameras) {
    for (const [cameraId, cam] of Object.entries(cameras)) {
      const t = this.tiles.get(cameraId);
      if (!t) continue;
      t.last = cam.tracks;
      if (t.pending && t.pending.frameIndex === cam.frame_index) {
        this.flush(t, t.pending, cam.tracks);
        t.pending = null;
      }
    }
  }

  draw(t, bitmap, tracks) {
    const { ctx, canvas } = t;
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);  // a low-quality variant is smaller: scale up
    bitmap.close();
    const thick = Math.max(2, Math.round(canvas.width / 320));
    ctx.font = `${Math.max(12, Math.round(canvas.width / 45))}px system-ui, sans-serif`;
    for (const tr of tracks) {
      const [x1, y1, x2, y2] = tr.bbox_xyxy;
      const dim = this.highlight !== null && tr.global_id !== this.highlight;
      ctx.globalAlpha = dim ? 0.35 : 1;
      ctx.strokeStyle = ctx.fillStyle = colourOf(tr.global_id);
      ctx.lineWidth = tr.global_id === this.highlight ? thick * 2 : thick;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = `#${tr.global_id}`;
      const w = ctx.measureText(label).width + 6;
      const h = parseInt(ctx.font, 10) + 4;
      ctx.fillRect(x1, Math.max(0, y1 - h), w, h);
      ctx.fillStyle = "#000";
      ctx.fillText(label, x1 + 3, Math.max(0, y1 - h) + h - 4);
    }
    ctx.globalAlpha = 1;
    t.tile.dataset.frames = String(Number(t.tile.dataset.frames) + 1);
  }

  redrawHighlight(globalId) {
    this.highlight = globalId;
  }
}
