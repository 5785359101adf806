// The client against the real release server: what an application using it
// sees, through restarts, crashes, token expiry and a frozen server.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { Client, HoldfastError } from '../holdfast.js';
import { Server, skipUnlessBuilt, token, until } from './server.js';

const skip = skipUnlessBuilt();
if (skip) console.log(skip);

/** Every client a test made, closed at the end. */
const clients = [];
after(() => {
  for (const c of clients) c.close();
});

/** A client of `server` (fast back-off, so tests reconnect quickly). */
function client(server, options = {}) {
  const c = new Client(server.url, { minReconnectDelayMs: 50, maxReconnectDelayMs: 500, connectTimeoutMs: 2000, ...options });
  if (process.env.DEBUG_CLIENT) c.on('state', (s) => console.log(Date.now() % 100000, JSON.stringify(s)));
  clients.push(c);
  return c;
}

/** Records what a room hands over: messages and gaps. */
function record(room) {
  const seen = { messages: [], gaps: [] };
  room.on('message', (m) => seen.messages.push(m));
  room.on('gap', (g) => seen.gaps.push(g));
  return seen;
}

/** Asserts offsets `1..n`, each once, in order. */
function assertContinuous(messages, n, who) {
  const offsets = messages.map((m) => m.offset);
  assert.deepEqual(offsets, Array.from({ length: n }, (_, i) => i + 1), `${who}: offsets ${offsets.join(',')}`);
}

describe('holdfast-client against the release server', { skip }, () => {
  it('publishes and subscribes: the other client gets the message once, with its offset', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const [a, b] = [client(server), client(server)];
    await Promise.all([a.connect(), b.connect()]);
    assert.equal(a.state, 'connected');
    const seen = record(await b.join('lobby'));
    const lobby = await a.join('lobby');
    const ack = await lobby.publish({ text: 'hello' });
    assert.equal(ack.offset, 1);
    await until('b has the message', () => seen.messages.length === 1);
    assert.deepEqual(seen.messages[0], { room: 'lobby', offset: 1, from: a.user, data: { text: 'hello' } });
    const members = await lobby.presence();
    assert.equal(members.length, 2);
    await assert.rejects(client(server).room('lobby').publish(1), (e) => e instanceof HoldfastError && e.code === 'closed');
  });

  it('SIGTERM and a restart: every client goes on with no message lost, repeated or reordered, in the same epoch', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const subscribers = [client(server), client(server), client(server)];
    const publishers = [client(server), client(server)];
    await Promise.all([...subscribers, ...publishers].map((c) => c.connect()));
    const seen = [];
    let epoch;
    for (const s of subscribers) {
      const room = s.room('orders');
      seen.push(record(room));
      epoch = (await room.join()).epoch;
    }
    const rooms = await Promise.all(publishers.map((p) => p.join('orders')));
    const acked = new Map(); // offset -> data
    let stop = false;
    const publishing = rooms.map(async (room, p) => {
      for (let i = 0; !stop; i++) {
        try {
          const data = { p, i };
          const { offset } = await room.publish(data, { timeoutMs: 5000 });
          acked.set(offset, data);
        } catch (e) {
          // Across the restart a publish may be refused or lose its answer;
          // whether it took effect, the subscribers tell.
          assert.ok(e instanceof HoldfastError, String(e));
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    await until('100 acks before the restart', () => acked.size >= 100, 20000);
    const exit = await server.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, 'a graceful exit');
    await server.start();
    const before = acked.size;
    await until('100 more acks after the restart', () => acked.size >= before + 100, 30000);
    stop = true;
    await Promise.all(publishing);
    const last = Math.max(...acked.keys());
    for (const [k, s] of seen.entries()) {
      await until(`subscriber ${k} has offset ${last}`, () => s.messages.at(-1)?.offset >= last, 20000);
      assertContinuous(s.messages, s.messages.length, `subscriber ${k}`);
      assert.deepEqual(s.gaps, [], `subscriber ${k}: no gap`);
      for (const [offset, data] of acked) {
        assert.deepEqual(s.messages[offset - 1].data, data, `subscriber ${k}: acked offset ${offset}`);
      }
    }
    for (const s of subscribers) assert.equal(s.room('orders').epoch, epoch, 'the same epoch');
    assert.deepEqual(seen[1].messages, seen[0].messages);
    assert.deepEqual(seen[2].messages, seen[0].messages);
  });

  it('kill -9 and a restart: the client reports the gap, then carries on in the new epoch', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const [sub, pub] = [client(server), client(server)];
    await Promise.all([sub.connect(), pub.connect()]);
    const room = sub.room('crash');
    const seen = record(room);
    const { epoch } = await room.join();
    const publisher = await pub.join('crash');
    for (let i = 1; i <= 5; i++) await publisher.publish(i);
    await until('five messages', () => seen.messages.length === 5);
    const exit = await server.stop('SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
    await server.start();
    await until('the gap is reported', () => seen.gaps.length === 1, 20000);
    assert.equal(seen.gaps[0].room, 'crash');
    assert.equal(seen.gaps[0].reason, 'epoch');
    assert.notEqual(seen.gaps[0].epoch, epoch);
    await until('both back', () => sub.state === 'connected' && pub.state === 'connected', 20000);
    const { offset } = await publisher.publish('after');
    await until('the message after the crash', () => seen.messages.at(-1)?.data === 'after');
    assert.equal(seen.messages.at(-1).offset, offset);
    assert.equal(seen.messages.length, 6, 'nothing delivered twice');
  });

  it('a token that expires: the server closes with 1008, getToken refreshes it, the client resumes', async () => {
    const secret = 'js-client-test-secret-0123456789abcdef';
    const server = await new Server({ HOLDFAST__AUTH__JWT_SECRET: secret }).start();
    after(() => server.dispose());
    let calls = 0;
    const c = client(server, {
      getToken: () => {
        calls += 1;
        return token(secret, 'ann', calls === 1 ? 2 : 3600);
      },
    });
    const codes = [];
    c.on('state', (s) => s.state === 'disconnected' && codes.push(s.code));
    await c.connect();
    assert.equal(c.user, 'ann');
    const session = c.session;
    const room = c.room('news');
    const seen = record(room);
    await room.join();
    await until('the expired token closes the connection', () => codes.length > 0, 10000);
    assert.equal(codes[0], 1008);
    await until('connected again', () => c.state === 'connected', 10000);
    assert.equal(calls, 2, 'getToken called again after 1008');
    assert.equal(c.session, session, 'the session resumed');
    const other = client(server, { token: token(secret, 'bob', 3600) });
    await other.connect();
    await (await other.join('news')).publish('still here');
    await until('the message after the refresh', () => seen.messages.length === 1);
    assert.equal(seen.messages[0].data, 'still here');
    const bad = client(server, { token: 'not-a-token', reconnect: false });
    await assert.rejects(bad.connect(), (e) => e instanceof HoldfastError);
  });

  it('a frozen server: a request times out with a local timeout, then the client recovers', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const c = client(server, { requestTimeoutMs: 300 });
    await c.connect();
    server.child.kill('SIGSTOP');
    try {
      await assert.rejects(c.rpc('printers.list'), (e) => e instanceof HoldfastError && e.code === 'timeout' && e.local);
    } finally {
      server.child.kill('SIGCONT');
    }
    assert.ok((await c.ping()) >= 0);
    assert.equal(c.state, 'connected');
  });

  it('a server that stops answering: the client hears nothing for two heartbeats, drops it, and resumes once it answers', async () => {
    const server = await new Server({ HOLDFAST__WS__HEARTBEAT_MS: '1000' }).start();
    after(() => server.dispose());
    const c = client(server, { connectTimeoutMs: 1000 });
    const changes = [];
    c.on('state', (s) => changes.push(s));
    await c.connect();
    const session = c.session;
    const room = c.room('quiet');
    const seen = record(room);
    await room.join();
    // A message in history keeps the room (and its epoch) while its members are away.
    const other = client(server);
    await other.connect();
    const others = await other.join('quiet');
    await others.publish('before');
    await until('the message before', () => seen.messages.length === 1);
    server.child.kill('SIGSTOP');
    try {
      await until('the dead connection is noticed', () => changes.some((s) => s.state === 'disconnected'), 6000);
      const dropped = changes.find((s) => s.state === 'disconnected');
      assert.equal(dropped.reason, 'nothing heard for two heartbeats');
    } finally {
      server.child.kill('SIGCONT');
    }
    await until('connected again', () => c.state === 'connected', 15000);
    assert.equal(c.session, session, 'the session resumed');
    await until('the other client back too', () => other.state === 'connected', 15000);
    await others.publish('awake');
    await until('the message after', () => seen.messages.length === 2);
    assert.deepEqual(seen.messages.map((m) => [m.offset, m.data]), [[1, 'before'], [2, 'awake']]);
    assert.deepEqual(seen.gaps, []);
  });

  it('history no longer reaching back after a reconnect: the room reports an incomplete gap, then goes on', async () => {
    const key = 'js-client-test-api-key-0123456789';
    const server = await new Server({ HOLDFAST__API__KEY: key, HOLDFAST__ROOMS__HISTORY_SIZE: '3' }).start();
    after(() => server.dispose());
    const c = client(server, { minReconnectDelayMs: 1500, maxReconnectDelayMs: 1500 });
    await c.connect();
    const room = c.room('busy');
    const seen = record(room);
    await room.join();
    const publish = (data) =>
      fetch(`http://${server.addr}/api/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ room: 'busy', data }),
      }).then((r) => r.json());
    await publish('seen');
    await until('the first message', () => seen.messages.length === 1);
    const res = await fetch(`http://${server.addr}/api/v1/users/${c.user}/disconnect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ code: 4000, reason: 'come back' }),
    });
    assert.equal(res.status, 200);
    await until('disconnected', () => c.state === 'disconnected');
    for (let i = 2; i <= 8; i++) await publish(`missed ${i}`);
    await until('connected again', () => c.state === 'connected', 10000);
    await until('the gap is reported', () => seen.gaps.length === 1);
    assert.deepEqual(seen.gaps[0], { room: 'busy', reason: 'incomplete', epoch: room.epoch, from: 2, to: 5 });
    await until('what history still held', () => seen.messages.length === 4);
    assert.deepEqual(seen.messages.map((m) => [m.offset, m.data]), [[1, 'seen'], [6, 'missed 6'], [7, 'missed 7'], [8, 'missed 8']]);
  });

  it('leave and join again with the same room object: its messages flow again, from the new join', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const [c, pub] = [client(server), client(server)];
    await Promise.all([c.connect(), pub.connect()]);
    const room = c.room('again');
    const seen = record(room);
    await room.join();
    const publisher = await pub.join('again');
    await publisher.publish('one');
    await until('the first', () => seen.messages.length === 1);
    await room.leave();
    await publisher.publish('while away');
    await room.join();
    await publisher.publish('back');
    await until('the one after the new join', () => seen.messages.length === 2);
    assert.deepEqual(seen.messages.map((m) => [m.offset, m.data]), [[1, 'one'], [3, 'back']]);
    assert.deepEqual(seen.gaps, [], 'a deliberate leave is no gap');
  });

  it('rpc answers and errors, history on join and on request', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const c = client(server);
    await c.connect();
    const printers = await c.rpc('printers.list');
    assert.ok(Array.isArray(printers.printers), JSON.stringify(printers));
    await assert.rejects(c.rpc('nothing.here'), (e) => e instanceof HoldfastError && e.code === 'unknown_method' && !e.local);
    const room = await c.join('notes');
    for (let i = 1; i <= 5; i++) await room.publish(`n${i}`);
    const page = await room.history({ since: 2 });
    assert.deepEqual(page.messages.map((m) => m.data), ['n3', 'n4', 'n5']);
    assert.equal(page.complete, true);

    const late = client(server);
    await late.connect();
    const notes = late.room('notes');
    const seen = record(notes);
    const joined = await notes.join({ history: 3 });
    assert.equal(joined.offset, 5);
    await room.publish('n6');
    await until('three earlier and one new', () => seen.messages.length === 4);
    assert.deepEqual(seen.messages.map((m) => [m.offset, m.data]), [[3, 'n3'], [4, 'n4'], [5, 'n5'], [6, 'n6']]);
  });
});
