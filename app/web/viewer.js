// The built-in live viewer: the reference client of docs/protocol.md. Polls /health, lets an operator pick an
// environment and start or stop a task, and watches one task over /ws/tracking/{id}: camera tiles, the map and
// the status bar. The WebSocket reconnects with backoff; when the server restarts the page recovers by itself.
import { CameraGrid } from "./camera-grid.js";
import { MapView } from "./map-view.js";
import { parseFrame } from "./wire.js";

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const ui = {
  health: $("health"), envSelect: $("env-select"), start: $("start-task"), taskSelect: $("task-select"),
  stop: $("stop-task"), conn: $("connection"), status: $("status-bar"), log: $("identity-log"),
};
const grid = new CameraGrid($("camera-grid"));
const map = new MapView($("map"), (gid) => grid.redrawHighlight(gid));
const state = { envs: [], healthy: false, taskId: null, ws: null, retry: 0, retryTimer: null, watchedEnv: null };
const LOG_MAX = 60;

const KEY_STORE = "spoton-api-key";

// When the server requires a key (401), ask for it once per tab; it is kept in this tab's session storage only.
async function api(path, options = {}, retried = false) {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(path, { ...options, headers });
  if (r.status === 401 && !retried) {
    const entered = window.prompt("This server needs an API key:");
    if (entered) { sessionStorage.setItem(KEY_STORE, entered.trim()); return api(path, options, true); }
  }
  if (r.status === 401) sessionStorage.removeItem(KEY_STORE);
  if (!r.ok) throw new Error(`${options.method || "GET"} ${path}: ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
}

async function pollHealth() {
  let status = "down";
  try {
    const r = await fetch("/health", { cache: "no-store" });
    status = (await r.json()).status;
  } catch { /* server down or restarting */ }
  const wasHealthy = state.healthy;
  state.healthy = status === "healthy" || status === "degraded";
  ui.health.dataset.state = status;
  ui.health.textContent = `server: ${status}`;
  ui.start.disabled = !state.healthy || !ui.envSelect.value;
  if (state.healthy && !wasHealthy) {  // first load, or the server came back
    await loadEnvironments();
    const asked = new URLSearchParams(location.search).get("task");
    if (asked && !state.taskId) await watch(asked).catch((e) => say(e.message));
  }
  if (state.healthy) await loadTasks();
  setTimeout(pollHealth, 2000);
}

async function loadEnvironments() {
  try {
    state.envs = await api("/api/v1/config/environments");
  } catch (e) { return say(e.message); }
  const current = ui.envSelect.value;
  ui.envSelect.replaceChildren(...state.envs.map((e) => new Option(e.name || e.id, e.id)));
  if (current && state.envs.some((e) => e.id === current)) ui.envSelect.value = current;
  ui.envSelect.disabled = state.envs.length === 0;
  ui.start.disabled = !state.healthy || !ui.envSelect.value;
}

async function loadTasks() {
  let tasks = [];
  try { tasks = await api("/api/v1/processing-tasks"); } catch { return; }
  const running = tasks.filter((t) => !["COMPLETED", "FAILED", "STOPPED"].includes(t.status));
  const keep = state.taskId;
  const options = running.map((t) => new Option(`${t.environment_id} · ${t.task_id.slice(0, 8)} · ${t.status}`, t.task_id));
  if (keep && !running.some((t) => t.task_id === keep)) options.push(new Option(`${keep.slice(0, 8)} · ended`, keep));
  ui.taskSelect.replaceChildren(new Option("—", ""), ...options);
  ui.taskSelect.value = keep || "";
  ui.stop.disabled = !keep || !running.some((t) => t.task_id === keep);
}

async function startTask() {
  ui.start.disabled = true;
  try {
    const started = await api("/api/v1/processing-tasks/start", {
      method: "POST", body: JSON.stringify({ environment_id: ui.envSelect.value }),
    });
    await watch(started.task_id);
    await loadTasks();
  } catch (e) { say(e.message); } finally { ui.start.disabled = !state.healthy; }
}

async function stopTask() {
  if (!state.taskId) return;
  ui.stop.disabled = true;
  try { await api(`/api/v1/processing-tasks/${state.taskId}/stop`, { method: "POST" }); } catch (e) { say(e.message); }
  await loadTasks();
}

async function watch(taskId) {
  closeSocket();
  state.taskId = taskId || null;
  grid.setCameras([]);
  if (!taskId) { setConn("idle", "not watching"); return; }
  const task = await api(`/api/v1/processing-tasks/${taskId}/status`);
  const env = state.envs.find((e) => e.id === task.environment_id);
  const cams = (await api(`/api/v1/config/environments/${task.environment_id}/cameras`))
    .filter((c) => task.camera_ids.includes(c.id));
  grid.setCameras(cams);
  if (env) map.setEnvironment(env, cams);
  ui.log.replaceChildren();
  state.retry = 0;
  connect();
}

function connect() {
  const taskId = state.taskId;
  if (!taskId) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/tracking/${taskId}`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setConn("connecting", "connecting…");
  ws.onopen = () => {
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) ws.send(JSON.stringify({ type: "auth", token: key }));  // first message; never in the URL
    state.retry = 0;
    setConn("connected", `watching ${taskId.slice(0, 8)}`);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      try { grid.onFrame(parseFrame(ev.data)); } catch (e) { say(`bad frame: ${e.message}`); }
      return;
    }
    const msg = JSON.parse(ev.data);
    if (msg.type === "tracking_update") { grid.onTracks(msg.cameras); map.onTracks(msg); }
    else if (msg.type === "status_update") showStatus(msg);
    else if (msg.type === "identity_event") logEvent(msg);
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;  // replaced on purpose
    state.ws = null;
    if ([1000, 4401, 4403, 4404].includes(ev.code)) {  // ended, refused, or unknown here: retrying won't help
      const why = { 1000: "task ended", 4401: "API key refused", 4403: "not allowed", 4404: "task not found" };
      setConn("ended", why[ev.code]);
      loadTasks();
      return;
    }
    const delay = Math.min(15000, 1000 * 2 ** state.retry++);
    setConn("reconnecting", `connection lost (${ev.code}); retrying in ${delay / 1000} s`);
    state.retryTimer = setTimeout(connect, delay);
  };
}

function closeSocket() {
  clearTimeout(state.retryTimer);
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
}

function setConn(stateName, text) {
  ui.conn.dataset.state = stateName;
  ui.conn.textContent = text;
}

function fmt(v, digits = 0) { return v === undefined || v === null ? "–" : Number(v).toFixed(digits); }

function showStatus(s) {
  const lat = s.latency_ms || {}, lag = s.event_loop_lag_ms || {}, gpu = s.gpu || {};
  const parts = [
    `${s.status}`,
    `fps ${fmt(s.fps && s.fps.total, 1)}`,
    `processed ${fmt(s.frames_processed)}`,
    `skipped ${fmt(s.frames_skipped)}`,
    `latency p50/p99 ${fmt(lat.p50)}/${fmt(lat.p99)} ms`,
    `JPEG q${fmt(s.jpeg_quality)}`,
    `loop lag p99 ${fmt(lag.p99, 1)} ms`,
    `CPU ${fmt(s.cpu_percent)} %`,
    gpu.available ? `GPU ${fmt(gpu.utilization_gpu_percent)} % · ${fmt(gpu.memory_allocated_mb)}/${fmt(gpu.memory_total_mb)} MB` : "GPU –",
    `people now ${fmt(s.persons_now)} · ids ${fmt(s.global_ids_total)}`,
  ];
  ui.status.textContent = parts.join("  ·  ");
}

function logEvent(e) {
  if (!["created", "merged", "lost"].includes(e.event)) return;
  const li = document.createElement("li");
  const extra = e.event === "merged" ? ` ← #${e.merged_id}` : e.camera_id ? ` (${e.camera_id})` : "";
  li.textContent = `${fmt(e.timestamp_video_s, 1)} s  ${e.event} #${e.global_id}${extra}`;
  ui.log.prepend(li);
  while (ui.log.children.length > LOG_MAX) ui.log.lastChild.remove();
}

function say(text) {
  const li = document.createElement("li");
  li.textContent = text;
  li.className = "error";
  ui.log.prepend(li);
}

ui.start.addEventListener("click", startTask);
ui.stop.addEventListener("click", stopTask);
ui.taskSelect.addEventListener("change", () => watch(ui.taskSelect.value));
ui.envSelect.addEventListener("change", () => { ui.start.disabled = !state.healthy || !ui.envSelect.value; });
pollHealth();
