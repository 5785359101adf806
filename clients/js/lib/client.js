// @ts-check
import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { HoldfastError } from './errors.js';
import { Room } from './room.js';

/** @typedef {import('./room.js').Message} Message */
/** @typedef {import('./room.js').PresenceDiff} PresenceDiff */
/** @typedef {import('./room.js').Gap} Gap */
/** @typedef {import('./room.js').JoinOptions} JoinOptions */

/**
 * `idle`: not started; `connecting`: opening a socket or resuming;
 * `connected`: welcome (and resume) done, requests flow; `disconnected`:
 * waiting to reconnect; `closed`: stopped, by `close()` or a close code that
 * says not to come back.
 *
 * @typedef {'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed'} State
 */

/**
 * @typedef {object} StateChange
 * @property {State} state
 * @property {State} previous
 * @property {number} [code] The close code, when a socket closed.
 * @property {string} [reason] The close reason.
 * @property {number} [delayMs] When `disconnected`: how long until the next attempt.
 * @property {HoldfastError} [error] When `closed` by the server's refusal.
 */

/**
 * @typedef {object} Connected
 * @property {string} session
 * @property {string} user
 * @property {boolean} resumed Whether the previous session was resumed.
 */

/**
 * @typedef {object} ClientEvents
 * @property {StateChange} state
 * @property {Connected} connected
 * @property {Message & { }} message Every room's messages.
 * @property {PresenceDiff} presence_diff
 * @property {Gap} gap
 */

/**
 * A WebSocket constructor: the browser's, Node 22's global, or e.g. the
 * `ws` package's.
 *
 * @typedef {new (url: string) => WebSocketLike} WebSocketConstructor
 */

/**
 * @typedef {object} WebSocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: { data: any }) => void) | null} onmessage
 * @property {((ev: { code: number, reason: string }) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [token] A JWT (sent as the `token` query parameter).
 * @property {() => string | Promise<string>} [getToken] Called before the
 *   first connection, after the server closed with 1008 (expired token),
 *   and after an attempt that failed before opening (a refused token looks
 *   like that in a browser).
 * @property {WebSocketConstructor} [WebSocket] Defaults to `globalThis.WebSocket`.
 * @property {number} [requestTimeoutMs] Default 10000.
 * @property {'wait' | 'fail'} [offline] Requests made while not connected:
 *   wait for the connection (default; their timeout still runs) or fail at
 *   once with `disconnected`.
 * @property {number} [maxQueued] Most requests waiting while offline (default 1000).
 * @property {number} [connectTimeoutMs] How long an attempt may take to get
 *   the server's welcome before it is given up (default 10000).
 * @property {number} [minReconnectDelayMs] Default 500.
 * @property {number} [maxReconnectDelayMs] Default 20000.
 * @property {boolean} [reconnect] Default true.
 */

/**
 * @typedef {object} Pending
 * @property {Record<string, unknown>} frame
 * @property {(v: any) => void} resolve
 * @property {(e: HoldfastError) => void} reject
 * @property {ReturnType<typeof setTimeout>} timer
 * @property {boolean} idempotent Re-sent after a reconnect rather than failed.
 */

/**
 * Close codes after which the client stops (1000 and 4500–4999 by the protocol).
 * @param {number} code
 */
function stops(code) {
  return code === 1000 || (code >= 4500 && code <= 4999);
}

/**
 * Close codes after which the client reconnects and resumes.
 * @param {number} code
 */
function reconnects(code) {
  return [1001, 1005, 1006, 1011, 1012, 1013, 1014].includes(code) || (code >= 4000 && code <= 4499);
}

/**
 * A connection to a Holdfast server that stays up: it reconnects with
 * back-off, resumes its session and rooms, and hands each room's messages
 * to the application once and in order.
 *
 * @extends {Emitter<ClientEvents>}
 */
export class Client extends Emitter {
  /**
   * @param {string} url The server's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** @private */
    this._url = url;
    /** @private */
    this._opts = options;
    const WS = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError(
        'holdfast: no WebSocket constructor; pass { WebSocket } (Node 20: `node --experimental-websocket`, or the ws package)',
      );
    }
    /** @private @type {WebSocketConstructor} */
    this._WebSocket = WS;
    /** @type {State} */
    this.state = 'idle';
    /** The session id (kept across reconnects). @type {string | null} */
    this.session = null;
    /** The user id the server gave. @type {string | null} */
    this.user = null;
    /** The server's heartbeat interval. */
    this.heartbeatMs = 15000;
    /** @private @type {WebSocketLike | null} */
    this._ws = null;
    /** @private */
    this._nextId = 1;
    /** @private @type {Map<number, Pending>} sent, waiting for an answer */
    this._inFlight = new Map();
    /** @private @type {Pending[]} waiting for the connection */
    this._queue = [];
    /** @private @type {Map<string, Room>} */
    this._rooms = new Map();
    /** @private */
    this._backoff = new Backoff(options.minReconnectDelayMs ?? 500, options.maxReconnectDelayMs ?? 20000);
    /** @private @type {number | null} the server's `draining` hint */
    this._drainHint = null;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._retryTimer = null;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._connectTimer = null;
    /** @private the latest connection attempt */
    this._attempt = 0;
    /** @private @type {ReturnType<typeof setInterval> | null} */
    this._heartbeat = null;
    /** @private */
    this._lastHeard = 0;
    /** @private */
    this._token = options.token ?? null;
    /** @private */
    this._needToken = !!options.getToken;
    /** @private @type {{ resolve: () => void, reject: (e: HoldfastError) => void }[]} */
    this._connectWaiters = [];
  }

  /**
   * Connects (and keeps reconnecting); resolves once connected the first
   * time, rejects if the client stops first.
   *
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state === 'connected') return Promise.resolve();
    const done = new Promise((resolve, reject) => {
      this._connectWaiters.push({ resolve: () => resolve(undefined), reject });
    });
    if (this.state === 'idle' || this.state === 'closed') {
      this._open();
    }
    return done;
  }

  /**
   * Closes the connection for good: no reconnect; waiting requests fail
   * with `closed`.
   */
  close() {
    this._stop(1000, 'closed by the client');
  }

  /**
   * The room named `name` (the same object every time), to listen on before
   * joining.
   *
   * @param {string} name
   * @returns {Room}
   */
  room(name) {
    let room = this._rooms.get(name);
    if (!room) {
      room = new Room(name, {
        request: (frame, opts) => this._request(frame, opts),
        relay: (_room, event, value) => this._emit(event, value),
        forget: (r) => {
          if (this._rooms.get(r.name) === r) this._rooms.delete(r.name);
        },
        adopt: (r) => {
          this._rooms.set(r.name, r);
        },
      });
      this._rooms.set(name, room);
    }
    return room;
  }

  /**
   * Joins `name`; answers its room.
   *
   * @param {string} name
   * @param {JoinOptions} [opts]
   * @returns {Promise<Room>}
   */
  async join(name, opts) {
    const room = this.room(name);
    await room.join(opts);
    return room;
  }

  /**
   * Calls an RPC method of the server's application; answers its reply data.
   *
   * @param {string} method
   * @param {unknown} [data]
   * @param {{ timeoutMs?: number }} [opts]
   * @returns {Promise<any>}
   */
  async rpc(method, data, opts = {}) {
    const reply = await this._request({ type: 'rpc', method, data: data === undefined ? null : data }, opts);
    return reply.data;
  }

  /**
   * Round trip to the server (the application `ping`); answers it in ms.
   *
   * @param {{ timeoutMs?: number }} [opts]
   */
  async ping(opts = {}) {
    const started = Date.now();
    await this._request({ type: 'ping' }, { ...opts, idempotent: true });
    return Date.now() - started;
  }

  // ---- requests ----

  /**
   * @param {Record<string, unknown>} frame
   * @param {{ timeoutMs?: number, idempotent?: boolean }} [opts]
   * @returns {Promise<any>}
   * @private
   */
  _request(frame, opts = {}) {
    const request = String(frame.type);
    if (this.state === 'closed' || this.state === 'idle') {
      const why = this.state === 'idle' ? 'call connect() first' : 'the client is closed';
      return Promise.reject(new HoldfastError('closed', why, { local: true, request }));
    }
    if (this.state !== 'connected') {
      if (this._opts.offline === 'fail') {
        return Promise.reject(new HoldfastError('disconnected', 'not connected', { local: true, request }));
      }
      if (this._queue.length >= (this._opts.maxQueued ?? 1000)) {
        return Promise.reject(
          new HoldfastError('queue_full', 'too many requests wait for the connection', { local: true, request }),
        );
      }
    }
    return new Promise((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this._opts.requestTimeoutMs ?? 10000;
      /** @type {Pending} */
      const pending = {
        frame,
        resolve,
        reject,
        idempotent: !!opts.idempotent,
        timer: setTimeout(() => {
          this._abandon(pending);
          reject(new HoldfastError('timeout', `no answer to ${request} within ${timeoutMs} ms`, { local: true, request }));
        }, timeoutMs),
      };
      if (this.state === 'connected') this._send(pending);
      else this._queue.push(pending);
    });
  }

  /** @param {Pending} pending @private */
  _send(pending) {
    const id = this._nextId++;
    this._inFlight.set(id, pending);
    this._write({ ...pending.frame, id });
  }

  /** A request that timed out is forgotten. @param {Pending} pending @private */
  _abandon(pending) {
    const i = this._queue.indexOf(pending);
    if (i >= 0) this._queue.splice(i, 1);
    for (const [id, p] of this._inFlight) {
      if (p === pending) this._inFlight.delete(id);
    }
  }

  /** @param {Record<string, unknown>} frame @private */
  _write(frame) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(frame));
  }

  // ---- the connection ----

  /** @param {State} state @param {Partial<StateChange>} [more] @private */
  _setState(state, more = {}) {
    const previous = this.state;
    if (previous === state && state !== 'disconnected') return;
    this.state = state;
    this._emit('state', { state, previous, ...more });
  }

  /** @private */
  async _open() {
    const attempt = ++this._attempt;
    this._setState('connecting');
    if (this._needToken && this._opts.getToken) {
      try {
        this._token = await this._opts.getToken();
        this._needToken = false;
      } catch (e) {
        if (attempt === this._attempt) {
          this._retry(1006, `getToken failed: ${e instanceof Error ? e.message : String(e)}`);
        }
        return;
      }
    }
    // Closed, or closed and connected again, while the token came.
    if (this.state !== 'connecting' || attempt !== this._attempt) return;
    const url = this._token ? `${this._url}${this._url.includes('?') ? '&' : '?'}token=${encodeURIComponent(this._token)}` : this._url;
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (e) {
      this._stop(1002, e instanceof Error ? e.message : String(e), 'bad_url');
      return;
    }
    this._ws = ws;
    let opened = false;
    const failed = () => {
      if (!opened && this._opts.getToken) this._needToken = true;
    };
    // No welcome in time (a black-holed address, a hung handshake): try again.
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws) {
        failed();
        this._dropSocket(4000, 'no welcome in time');
      }
    }, this._opts.connectTimeoutMs ?? 10000);
    ws.onopen = () => {
      opened = true;
      this._lastHeard = Date.now();
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      this._frame(frame);
    };
    // A handshake that failed: browsers then close, but some WebSocket
    // implementations (Node 20's) only report the error.
    ws.onerror = () => {
      if (this._ws !== ws || opened) return;
      failed();
      this._dropSocket(4000, 'the connection failed');
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      failed();
      this._closed(ev.code || 1006, ev.reason || '');
    };
  }

  /** @param {any} f @private */
  _frame(f) {
    switch (f.type) {
      case 'welcome':
        return this._welcome(f);
      case 'message': {
        const room = this._rooms.get(f.room);
        room?._message({ room: f.room, offset: f.offset, from: f.from, data: f.data });
        return;
      }
      case 'epoch':
        return this._rooms.get(f.room)?._epoch(f.epoch, f.offset);
      case 'presence_diff':
        return this._rooms.get(f.room)?._presenceDiff({ room: f.room, joins: f.joins, leaves: f.leaves });
      case 'draining':
        this._drainHint = typeof f.reconnect_after_ms === 'number' ? f.reconnect_after_ms : null;
        return;
      case 'resumed':
        if (f.id === undefined) return;
        return this._answer(f);
      default:
        if (f.id !== undefined && f.id !== null) this._answer(f);
    }
  }

  /** @param {any} f @private */
  _answer(f) {
    const pending = this._inFlight.get(f.id);
    if (!pending) return;
    this._inFlight.delete(f.id);
    clearTimeout(pending.timer);
    if (f.type === 'error') {
      pending.reject(new HoldfastError(f.code, f.message, { request: String(pending.frame.type) }));
    } else {
      pending.resolve(f);
    }
  }

  /** @param {any} w @private */
  _welcome(w) {
    this._clearConnectTimer();
    this.heartbeatMs = w.heartbeat_ms || 15000;
    this._startHeartbeat();
    const previous = this.session;
    if (!previous) {
      this.session = w.session;
      this.user = w.user;
      this._ready(false);
      return;
    }
    this._resume(previous, { session: w.session, user: w.user });
  }

  /** @private */
  _clearConnectTimer() {
    if (this._connectTimer) clearTimeout(this._connectTimer);
    this._connectTimer = null;
  }

  /**
   * Re-attaches the previous session and its rooms: the server replays, per
   * room, what followed the last offset seen.
   *
   * @param {string} previous
   * @param {{ session: string, user: string }} welcome This connection's own
   *   session and user, should the previous session not resume.
   * @private
   */
  _resume(previous, welcome) {
    /** @type {Record<string, number>} */
    const rooms = {};
    /** @type {Record<string, string>} */
    const epochs = {};
    const joined = [...this._rooms.values()].filter((r) => r.joined);
    for (const r of joined) {
      rooms[r.name] = r.offset ?? 0;
      if (r.epoch) epochs[r.name] = r.epoch;
      r._pause();
    }
    const id = this._nextId++;
    const timer = setTimeout(() => this._dropSocket(4000, 'resume timed out'), this._opts.requestTimeoutMs ?? 10000);
    this._inFlight.set(id, {
      frame: { type: 'resume' },
      idempotent: false,
      timer,
      resolve: (/** @type {any} */ answer) => {
        if (answer.session !== previous) this.user = welcome.user;
        this.session = answer.session;
        for (const r of joined) r._resumed(answer.rooms?.[r.name]);
        this._ready(answer.session === previous);
      },
      reject: (e) => {
        // The connection dropped or the client closed meanwhile: what
        // closed it decides what happens next (the next resume).
        if (e.local) return;
        for (const r of joined) r._disconnected();
        if (e.code === 'unavailable') {
          this._dropSocket(4000, 'resume unavailable; retrying');
          return;
        }
        // The session is not ours to resume (another user's token): start
        // afresh and join the rooms again.
        this.session = welcome.session;
        this.user = welcome.user;
        this._ready(false);
        for (const r of joined) {
          r.joined = false;
          r.join().catch(() => {});
        }
      },
    });
    this._write({ type: 'resume', session: previous, rooms, epochs, id });
  }

  /** @param {boolean} resumed @private */
  _ready(resumed) {
    this._backoff.reset();
    this._drainHint = null;
    this._setState('connected');
    this._emit('connected', { session: /** @type {string} */ (this.session), user: /** @type {string} */ (this.user), resumed });
    const queued = this._queue;
    this._queue = [];
    for (const p of queued) this._send(p);
    for (const w of this._connectWaiters.splice(0)) w.resolve();
  }

  /** @private */
  _startHeartbeat() {
    this._stopHeartbeat();
    const every = Math.max(1000, Math.floor(this.heartbeatMs / 2));
    this._heartbeat = setInterval(() => {
      if (Date.now() - this._lastHeard > 2 * this.heartbeatMs) {
        this._dropSocket(4000, 'nothing heard for two heartbeats');
        return;
      }
      this._write({ type: 'ping' });
    }, every);
  }

  /** @private */
  _stopHeartbeat() {
    if (this._heartbeat) clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  /**
   * Gives up on the current socket (dead, or in a bad state) and reconnects.
   *
   * @param {number} code
   * @param {string} reason
   * @private
   */
  _dropSocket(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    try {
      ws.close(code, reason);
    } catch {
      // closing a dead socket may throw; it is gone either way
    }
    this._closed(1006, reason);
  }

  /**
   * The socket closed with `code`: reconnect, or stop, by the protocol's
   * close-code policy.
   *
   * @param {number} code
   * @param {string} reason
   * @private
   */
  _closed(code, reason) {
    this._ws = null;
    this._clearConnectTimer();
    this._stopHeartbeat();
    for (const r of this._rooms.values()) r._disconnected();
    const inFlight = [...this._inFlight.values()];
    this._inFlight.clear();
    for (const p of inFlight) {
      if (p.idempotent && this._opts.offline !== 'fail') {
        this._queue.push(p);
      } else {
        clearTimeout(p.timer);
        const what = String(p.frame.type);
        p.reject(
          new HoldfastError('disconnected', `the connection closed (${code}) before ${what} was answered`, {
            local: true,
            request: what,
          }),
        );
      }
    }
    if (this.state === 'closed') return;
    if (this._opts.reconnect === false || stops(code)) {
      this._stop(code, reason);
      return;
    }
    if (code === 1008) {
      if (this._opts.getToken) {
        this._needToken = true;
        this._retry(code, reason);
      } else {
        this._stop(code, reason, 'policy');
      }
      return;
    }
    if (code === 1009) {
      this._stop(code, reason, 'too_large');
      return;
    }
    if (!reconnects(code) && code < 4000) {
      this._stop(code, reason, 'protocol');
      return;
    }
    this._retry(code, reason);
  }

  /** @param {number} code @param {string} reason @private */
  _retry(code, reason) {
    const delayMs = this._drainHint ?? this._backoff.next();
    this._drainHint = null;
    this._setState('disconnected', { code, reason, delayMs });
    if (this._opts.offline === 'fail') this._failQueue('disconnected', 'not connected');
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this.state === 'disconnected') this._open();
    }, delayMs);
  }

  /**
   * Stops for good.
   *
   * @param {number} code
   * @param {string} reason
   * @param {string} [errorCode] Set when the server's close is an error.
   * @private
   */
  _stop(code, reason, errorCode) {
    if (this.state === 'closed') return;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._clearConnectTimer();
    this._stopHeartbeat();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(1000, 'closed by the client');
      } catch {
        // already closed
      }
    }
    const error = errorCode
      ? new HoldfastError(errorCode, `the server closed the connection (${code}${reason ? `: ${reason}` : ''})`, { local: false })
      : undefined;
    /** @type {Partial<StateChange>} */
    const more = { code, reason };
    if (error) more.error = error;
    this._setState('closed', more);
    const inFlight = [...this._inFlight.values()];
    this._inFlight.clear();
    for (const p of inFlight) {
      clearTimeout(p.timer);
      p.reject(new HoldfastError('closed', 'the client is closed', { local: true, request: String(p.frame.type) }));
    }
    this._failQueue('closed', 'the client is closed');
    const why = error ?? new HoldfastError('closed', `closed (${code}${reason ? `: ${reason}` : ''})`, { local: true });
    for (const w of this._connectWaiters.splice(0)) w.reject(why);
  }

  /** @param {string} code @param {string} message @private */
  _failQueue(code, message) {
    const queued = this._queue;
    this._queue = [];
    for (const p of queued) {
      clearTimeout(p.timer);
      p.reject(new HoldfastError(code, message, { local: true, request: String(p.frame.type) }));
    }
  }
}
