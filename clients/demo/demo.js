// The first-run demo: a chat over the demo: rooms with the client library
// the server serves, and the server's own health beside it.
import { Client } from '/client/holdfast.js';

const ROOMS = [
  { name: 'demo:lobby', label: 'lobby', note: 'history and presence' },
  { name: 'demo:random', label: 'random', note: 'history and presence' },
  { name: 'demo:moderated', label: 'moderated', note: 'a room handler refuses spam' },
];
const HISTORY = 50;
const HEALTH_EVERY_MS = 2000;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const nameInput = /** @type {HTMLInputElement} */ ($('name'));
nameInput.value = sessionStorage.getItem('holdfast-demo-name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
nameInput.addEventListener('change', () => sessionStorage.setItem('holdfast-demo-name', nameInput.value));

const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const client = new Client(`${scheme}://${location.host}/ws`);
/** What the page holds of each room it joined. */
const rooms = new Map();
let current = '';

client.on('state', ({ state, code }) => {
  const badge = $('state');
  badge.dataset.state = state;
  badge.textContent = state === 'disconnected' ? `reconnecting (${code})` : state;
});

function roomState(name) {
  let r = rooms.get(name);
  if (!r) {
    r = { messages: [], members: new Map(), rules: '', notice: '', joined: null };
    rooms.set(name, r);
  }
  return r;
}

/** Joins `name` once: history first, then live messages, presence kept current. */
function join(name) {
  const r = roomState(name);
  if (r.joined) return r.joined;
  const room = client.room(name);
  room.on('message', (m) => {
    r.messages.push(m);
    if (name === current) appendMessage(m);
  });
  room.on('gap', (g) => {
    r.notice = g.reason === 'epoch' ? 'The server lost this room\u2019s history; some messages may be missing.' : 'Some messages may be missing.';
    if (name === current) renderNotice(r);
  });
  room.on('presence_diff', (d) => {
    for (const j of d.joins) r.members.set(j.user, j.sessions);
    for (const l of d.leaves) r.members.delete(l.user);
    if (name === current) renderPresence(r);
  });
  r.joined = room.join({ history: HISTORY }).then(async (joined) => {
    r.rules = joined.data?.rules ?? '';
    for (const m of await room.presence()) r.members.set(m.user, m.sessions);
    if (name === current) render();
  });
  r.joined.catch((e) => showError(`could not join ${name}: ${e.message}`));
  return r.joined;
}

function select(name) {
  current = name;
  for (const b of $('rooms').querySelectorAll('button')) b.setAttribute('aria-current', String(b.dataset.room === name));
  render();
  join(name);
}

function render() {
  const r = roomState(current);
  $('messages').replaceChildren();
  for (const m of r.messages) appendMessage(m);
  const rules = $('rules');
  rules.hidden = !r.rules;
  rules.textContent = r.rules;
  renderNotice(r);
  renderPresence(r);
}

function appendMessage(m) {
  const li = document.createElement('li');
  li.dataset.offset = String(m.offset);
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = (m.data && typeof m.data === 'object' && m.data.name) || m.from;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.data && typeof m.data === 'object' ? String(m.data.text ?? '') : JSON.stringify(m.data);
  const offset = document.createElement('span');
  offset.className = 'offset';
  offset.textContent = `#${m.offset}`;
  li.append(offset, who, text);
  const list = $('messages');
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function renderNotice(r) {
  const notice = $('notice');
  notice.hidden = !r.notice;
  notice.textContent = r.notice;
}

function renderPresence(r) {
  const list = $('presence');
  list.replaceChildren();
  for (const [user, sessions] of [...r.members].sort()) {
    const li = document.createElement('li');
    li.textContent = sessions > 1 ? `${user} (${sessions})` : user;
    if (user === client.user) li.classList.add('you');
    list.append(li);
  }
}

function showError(text) {
  const error = $('error');
  error.hidden = !text;
  error.textContent = text;
}

$('compose').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('input'));
  const text = input.value.trim();
  if (!text) return;
  // Cleared now, not once the publish is acknowledged: what is typed
  // meanwhile is the next message, never wiped.
  input.value = '';
  showError('');
  try {
    await join(current);
    await client.room(current).publish({ text, name: nameInput.value });
  } catch (e) {
    if (!input.value) input.value = text; // refused: back for editing
    showError(`${e.code ?? 'error'}: ${e.message}`);
  }
});

async function health() {
  try {
    const res = await fetch('/health', { cache: 'no-store' });
    const body = await res.json();
    const status = $('health-status');
    status.dataset.status = body.status;
    status.textContent = body.status;
    const rows = Object.entries(body.checks).map(([name, c]) => {
      const tr = document.createElement('tr');
      const n = document.createElement('td');
      n.textContent = name;
      const s = document.createElement('td');
      s.className = 'status';
      s.dataset.status = c.status;
      s.textContent = c.status;
      const restarts = document.createElement('td');
      restarts.textContent = c.restarts ? `${c.restarts} restarts` : '';
      tr.append(n, s, restarts);
      return tr;
    });
    $('health').querySelector('tbody')?.replaceChildren(...rows);
  } catch {
    const status = $('health-status');
    status.dataset.status = 'down';
    status.textContent = 'unreachable';
  }
}

for (const r of ROOMS) {
  const b = document.createElement('button');
  b.dataset.room = r.name;
  b.innerHTML = `# ${r.label}<small>${r.note}</small>`;
  b.addEventListener('click', () => select(r.name));
  $('rooms').append(b);
}
client.connect().catch((e) => showError(`not connected: ${e.message}`));
select(ROOMS[0].name);
health();
setInterval(health, HEALTH_EVERY_MS);
