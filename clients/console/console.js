// The operator console: the supervision tree, recent events, scheduled
// tasks and a few live figures, from the admin API (with the token the
// operator typed in, kept in this tab's sessionStorage only) and from
// /health and /metrics. It polls every second, so a change shows within 2 s.

const POLL_MS = 1000;
/** Points kept per chart: five minutes at one a second. */
const POINTS = 300;
const TOKEN_KEY = 'holdfast-admin-token';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const tokenInput = /** @type {HTMLInputElement} */ ($('token'));
/** @type {Record<string, number[]>} */
const series = { connections: [], rooms: [], deliveries: [] };
let lastFrames = null;
let chaos = false;

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** An admin API call with the token; throws an Error a person can read. */
async function admin(path, method = 'GET') {
  const res = await fetch(`/admin${path}`, {
    method,
    headers: { Authorization: `Bearer ${token()}` },
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) throw new Error(`the admin token was refused: ${body.message ?? 'unauthorized'}`);
  if (res.status === 404 && path === '/actors') {
    throw new Error('the admin API is off on this server: set admin.token (HOLDFAST__ADMIN__TOKEN)');
  }
  if (!res.ok) throw new Error(`${method} /admin${path}: ${res.status} ${body.message ?? ''}`);
  return body;
}

function showError(text) {
  const error = $('error');
  error.hidden = !text;
  error.textContent = text;
}

function setStatus(status, text = status) {
  const badge = $('status');
  badge.dataset.status = status;
  badge.textContent = text;
}

function age(seconds) {
  if (!seconds) return 'down';
  if (seconds < 120) return `${Math.floor(seconds)} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}

/** Draws the tree from the flat list (each actor names its supervisor). */
function drawTree(actors) {
  const children = new Map();
  const names = new Set(actors.map((a) => a.name));
  for (const a of actors) {
    const parent = names.has(a.supervisor) ? a.supervisor : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(a);
  }
  const list = (parent) => {
    const ul = document.createElement('ul');
    for (const a of children.get(parent) ?? []) {
      const li = document.createElement('li');
      li.append(node(a));
      if (children.has(a.name)) li.append(list(a.name));
      ul.append(li);
    }
    return ul;
  };
  $('tree').replaceChildren(...list('').children);
}

function node(a) {
  const div = document.createElement('div');
  div.className = 'node';
  div.dataset.actor = a.name;
  div.dataset.status = a.status;
  const dot = document.createElement('span');
  dot.className = 'dot';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = a.name;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${a.status}${a.critical ? ', critical' : ''} · up ${age(a.uptime_s)} · ${a.restarts} ${a.restarts === 1 ? 'restart' : 'restarts'}`;
  meta.dataset.restarts = String(a.restarts);
  const actions = document.createElement('span');
  actions.className = 'actions';
  const restart = document.createElement('button');
  restart.textContent = 'restart';
  restart.dataset.action = 'restart';
  restart.addEventListener('click', () => act(a.name, 'restart'));
  actions.append(restart);
  if (chaos) {
    const crash = document.createElement('button');
    crash.textContent = 'crash';
    crash.className = 'crash';
    crash.dataset.action = 'crash';
    crash.addEventListener('click', () => act(a.name, 'crash'));
    actions.append(crash);
  }
  div.append(dot, name, meta, actions);
  if (a.last_failure) {
    const failure = document.createElement('span');
    failure.className = 'failure';
    failure.textContent = `last failure ${a.last_failure.at}: ${a.last_failure.reason}`;
    div.append(failure);
  }
  return div;
}

async function act(name, action) {
  try {
    await admin(`/actors/${encodeURIComponent(name)}/${action}`, 'POST');
    showError('');
    await refresh();
  } catch (e) {
    showError(e.message);
  }
}

function drawEvents(events) {
  const items = events
    .slice()
    .reverse()
    .map((e) => {
      const li = document.createElement('li');
      const { seq, at, kind, ...rest } = e;
      const k = document.createElement('span');
      k.className = 'kind';
      k.textContent = kind;
      li.dataset.kind = kind;
      li.append(`${at.slice(11, 19)} `, k, ` ${JSON.stringify(rest)}`);
      return li;
    });
  $('events').replaceChildren(...items);
}

function drawTasks(tasks) {
  const rows = tasks.map((t) => {
    const tr = document.createElement('tr');
    for (const text of [t.name, t.schedule, t.last_run ? t.last_run.slice(11, 19) : '–', t.last_outcome ?? '–']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $('tasks').querySelector('tbody')?.replaceChildren(...rows);
}

/** Adds a point to a chart and redraws it. */
function plot(name, value) {
  const points = series[name];
  points.push(value);
  if (points.length > POINTS) points.shift();
  const max = Math.max(1, ...points);
  const xy = points.map((v, i) => `${(i * 300) / (POINTS - 1)},${58 - (v / max) * 56}`).join(' ');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', xy);
  $(`c-${name}`).replaceChildren(line);
  $(`v-${name}`).textContent = String(Math.round(value * 10) / 10);
}

/** The figures: connections and rooms from /health, deliveries from /metrics. */
async function figures() {
  const health = await (await fetch('/health', { cache: 'no-store' })).json();
  const checks = Object.entries(health.checks ?? {});
  const connections = health.checks?.connections?.details?.connections ?? 0;
  const rooms = checks
    .filter(([name]) => /^rooms-\d+$/.test(name))
    .reduce((n, [, c]) => n + (c.details?.rooms ?? 0), 0);
  const metrics = await (await fetch('/metrics', { cache: 'no-store' })).text();
  const frames = metrics
    .split('\n')
    .filter((l) => l.startsWith('holdfast_ws_frames_out_total'))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  const now = Date.now();
  const rate = lastFrames ? ((frames - lastFrames.frames) * 1000) / Math.max(1, now - lastFrames.at) : 0;
  lastFrames = { frames, at: now };
  plot('connections', connections);
  plot('rooms', rooms);
  plot('deliveries', rate);
}

let ticks = 0;
async function refresh() {
  if (!token()) {
    setStatus('', 'not signed in');
    return;
  }
  try {
    const tree = await admin('/actors');
    chaos = !!tree.chaos;
    setStatus(tree.status);
    drawTree(tree.actors);
    drawEvents((await admin('/events?n=50')).events);
    if (ticks++ % 5 === 0) drawTasks((await admin('/tasks')).tasks);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError('');
  } catch (e) {
    setStatus('unhealthy', 'error');
    showError(e.message);
  }
}

$('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  tokenInput.value = '';
  $('signout').hidden = false;
  ticks = 0;
  refresh();
});
$('signout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $('signout').hidden = true;
  $('tree').replaceChildren();
  refresh();
});
$('signout').hidden = !token();

refresh();
setInterval(refresh, POLL_MS);
setInterval(() => figures().catch(() => {}), POLL_MS);
