// @ts-check
import { Emitter } from './emitter.js';
import { HoldfastError } from './errors.js';

/**
 * @typedef {object} Message
 * @property {string} room
 * @property {number} offset Per room, from 1, one more per message of an epoch.
 * @property {string} from The publisher's user id (`"server"` for the server API).
 * @property {unknown} data
 */

/**
 * @typedef {object} PresenceMember
 * @property {string} user
 * @property {number} sessions
 */

/**
 * @typedef {object} PresenceDiff
 * @property {string} room
 * @property {PresenceMember[]} joins
 * @property {PresenceMember[]} leaves
 */

/**
 * Messages of a room may be missing: the application should refetch what it
 * shows of the room. `reason`:
 * - `epoch`: the room's offsets restarted (its history was lost on the
 *   server); `epoch` is the new one;
 * - `incomplete`: after a reconnect, history no longer reached back to the
 *   last message seen;
 * - `skipped`: offsets jumped (the server dropped messages for a slow
 *   client) and history no longer held them.
 * `from`..`to` are the missing offsets when known.
 *
 * @typedef {object} Gap
 * @property {string} room
 * @property {'epoch' | 'incomplete' | 'skipped'} reason
 * @property {string} epoch
 * @property {number} [from]
 * @property {number} [to]
 */

/**
 * @typedef {object} HistoryPage
 * @property {string} room
 * @property {string} epoch
 * @property {Message[]} messages
 * @property {boolean} complete Whether history reached back to `since + 1`.
 */

/**
 * @typedef {object} RoomEvents
 * @property {Message} message
 * @property {PresenceDiff} presence_diff
 * @property {Gap} gap
 */

/**
 * @typedef {object} JoinOptions
 * @property {number} [history] Deliver up to this many earlier messages
 *   first, as `message` events, in order with what follows.
 * @property {number} [timeoutMs]
 */

/**
 * What a room needs of its client.
 *
 * @typedef {object} RoomLink
 * @property {(frame: Record<string, unknown>, opts?: { timeoutMs?: number, idempotent?: boolean }) => Promise<any>} request
 * @property {(room: Room, name: keyof RoomEvents, event: any) => void} relay
 * @property {(room: Room) => void} forget
 * @property {(room: Room) => void} adopt
 */

/** Most messages held past a gap while history fills it. */
const MAX_HELD = 10_000;
/** Most messages one history request asks for (the protocol's limit). */
const HISTORY_LIMIT = 1000;

/**
 * A room of a client: its messages in order, once each, across reconnects.
 *
 * The room keeps the epoch and the offset of the last message it handed to
 * the application. A message at or below that offset is a duplicate and is
 * dropped; one past a gap is held while history fills the gap; on a new
 * epoch it reports a `gap` and starts again from the new offsets.
 *
 * @extends {Emitter<RoomEvents>}
 */
export class Room extends Emitter {
  /**
   * @param {string} name
   * @param {RoomLink} link
   */
  constructor(name, link) {
    super();
    /** The room's name. */
    this.name = name;
    /** @private */
    this._link = link;
    /** Whether the application wants to be a member (kept across reconnects). */
    this.joined = false;
    /** The room's epoch, as last seen. */
    this.epoch = '';
    /**
     * The offset of the last message handed over; `null` while the next
     * message sets it (after an epoch change whose offset is unknown).
     * @type {number | null}
     */
    this.offset = 0;
    /** @private @type {Map<number, Message>} messages past a gap */
    this._held = new Map();
    /** @private */
    this._filling = false;
    /** @private paused during a resume: messages wait for its answer */
    this._paused = false;
    /** @private @type {Message[]} */
    this._waiting = [];
    /**
     * Messages that came while a join's answer was on its way (a
     * WebSocket may hand over several frames before the answer's
     * continuation runs); `null` when no join is.
     * @private @type {Message[] | null}
     */
    this._joinBuffer = null;
  }

  /**
   * Joins the room. With `history`, the earlier messages come first.
   *
   * @param {JoinOptions} [opts]
   * @returns {Promise<{ offset: number, epoch: string, data?: unknown }>}
   */
  async join(opts = {}) {
    // A room left before is the client's again.
    this._link.adopt(this);
    const joining = !this.joined;
    if (joining) this._joinBuffer = [];
    let reply;
    try {
      reply = await this._link.request(
        { type: 'join', room: this.name },
        { timeoutMs: opts.timeoutMs, idempotent: true },
      );
    } catch (e) {
      if (joining) this._joinBuffer = null;
      throw e;
    }
    // Joined again after the session could not be resumed (the room kept
    // its epoch and offset): what was published meanwhile comes from
    // history, or is reported missing, never skipped in silence.
    const rejoined = !this.joined && this.epoch !== '' && reply.epoch === this.epoch && this.offset !== null;
    const fresh = !rejoined && (!this.joined || reply.epoch !== this.epoch);
    this.joined = true;
    if (rejoined && this.offset !== null && this.offset < reply.offset && !this._filling) {
      void this._fill(reply.offset, true);
    }
    if (fresh) {
      this.epoch = reply.epoch;
      this._held.clear();
      const back = Math.max(0, Math.min(opts.history ?? 0, HISTORY_LIMIT));
      this.offset = Math.max(0, reply.offset - back);
      if (this.offset < reply.offset) {
        void this._fill(reply.offset, false);
      }
    }
    if (joining) {
      const early = this._joinBuffer ?? [];
      this._joinBuffer = null;
      for (const m of early) this._message(m);
    }
    /** @type {{ offset: number, epoch: string, data?: unknown }} */
    const out = { offset: reply.offset, epoch: reply.epoch };
    if ('data' in reply) out.data = reply.data;
    return out;
  }

  /** Leaves the room; its messages stop, and a later join starts afresh. */
  async leave() {
    this.joined = false;
    this.epoch = '';
    this.offset = 0;
    this._held.clear();
    this._waiting = [];
    try {
      await this._link.request({ type: 'leave', room: this.name }, { idempotent: true });
    } finally {
      if (!this.joined) this._link.forget(this);
    }
  }

  /**
   * Publishes `data`; answers the offset it took.
   *
   * @param {unknown} data
   * @param {{ timeoutMs?: number }} [opts]
   * @returns {Promise<{ offset: number }>}
   */
  async publish(data, opts = {}) {
    const reply = await this._link.request(
      { type: 'publish', room: this.name, data: data === undefined ? null : data },
      opts,
    );
    return { offset: reply.offset };
  }

  /**
   * Who is in the room, one entry per user.
   *
   * @returns {Promise<PresenceMember[]>}
   */
  async presence() {
    const reply = await this._link.request({ type: 'presence', room: this.name }, { idempotent: true });
    return reply.members;
  }

  /**
   * Messages after `since`, oldest first, at most `limit` (≤ 1000).
   *
   * @param {{ since?: number, limit?: number, timeoutMs?: number }} [opts]
   * @returns {Promise<HistoryPage>}
   */
  async history(opts = {}) {
    /** @type {Record<string, unknown>} */
    const frame = { type: 'history', room: this.name };
    if (opts.since !== undefined) frame.since = opts.since;
    if (opts.limit !== undefined) frame.limit = opts.limit;
    const reply = await this._link.request(frame, { timeoutMs: opts.timeoutMs, idempotent: true });
    return {
      room: this.name,
      epoch: reply.epoch,
      complete: reply.complete,
      messages: reply.messages.map((/** @type {any} */ m) => ({ room: this.name, ...m })),
    };
  }

  // ---- called by the client ----

  /**
   * @internal
   * A `message` frame of this room.
   * @param {Message} m
   */
  _message(m) {
    if (this._joinBuffer) {
      if (this._joinBuffer.length < MAX_HELD) this._joinBuffer.push(m);
      return;
    }
    if (!this.joined) return;
    if (this._paused) {
      this._waiting.push(m);
      return;
    }
    this._take(m);
  }

  /**
   * @internal
   * An `epoch` frame: offsets restart in `epoch`, after `offset`.
   * @param {string} epoch
   * @param {number} offset
   */
  _epoch(epoch, offset) {
    if (!this.joined || epoch === this.epoch) return;
    this._newEpoch(epoch, offset);
  }

  /**
   * @internal
   * @param {PresenceDiff} diff
   */
  _presenceDiff(diff) {
    if (this.joined) this._emitBoth('presence_diff', diff);
  }

  /**
   * @internal
   * A resume began: messages wait for its answer.
   */
  _pause() {
    this._paused = true;
    this._waiting = [];
    this._held.clear(); // the resume replays from `offset`
  }

  /**
   * @internal
   * The resume's answer for this room (`undefined`: it was not part of it).
   * @param {{ replayed: number, complete: boolean, epoch: string } | undefined} answer
   */
  _resumed(answer) {
    const waiting = this._waiting;
    this._paused = false;
    this._waiting = [];
    if (answer) {
      if (answer.epoch !== this.epoch) {
        this._newEpoch(answer.epoch, null);
      } else if (!answer.complete) {
        const first = waiting[0]?.offset;
        const from = (this.offset ?? 0) + 1;
        /** @type {Gap} */
        const gap = { room: this.name, reason: 'incomplete', epoch: this.epoch, from };
        if (first !== undefined) gap.to = first - 1;
        this.offset = first !== undefined ? first - 1 : null;
        this._emitBoth('gap', gap);
      }
    }
    for (const m of waiting) this._take(m);
  }

  /**
   * @internal
   * The connection closed: what waits is replayed by the next resume.
   */
  _disconnected() {
    this._paused = false;
    this._waiting = [];
    this._held.clear();
  }

  // ---- ordering ----

  /**
   * @param {string} epoch
   * @param {number | null} offset
   * @private
   */
  _newEpoch(epoch, offset) {
    this.epoch = epoch;
    this.offset = offset;
    this._held.clear();
    /** @type {Gap} */
    const gap = { room: this.name, reason: 'epoch', epoch };
    this._emitBoth('gap', gap);
  }

  /** @param {Message} m @private */
  _take(m) {
    if (this.offset === null) this.offset = m.offset - 1;
    if (m.offset <= this.offset) return; // a duplicate (a replay of what was seen)
    if (m.offset === this.offset + 1 && !this._filling) {
      this._deliver(m);
      this._release();
      return;
    }
    this._held.set(m.offset, m);
    if (this._held.size > MAX_HELD) {
      this._skipTo(Math.min(...this._held.keys()) - 1);
      return;
    }
    if (!this._filling) {
      void this._fill(Math.min(...this._held.keys()) - 1, true);
    }
  }

  /**
   * Reads history up to offset `to` and hands it over in order, then what
   * was held. `lost`: the messages went missing (a gap is reported if
   * history no longer has them), rather than being asked for.
   *
   * @param {number} to
   * @param {boolean} lost
   * @private
   */
  async _fill(to, lost) {
    this._filling = true;
    const epoch = this.epoch;
    try {
      while (this.joined && this.offset !== null && this.offset < to && this.epoch === epoch) {
        const since = this.offset;
        const page = await this.history({ since, limit: Math.min(to - since, HISTORY_LIMIT) });
        if (page.epoch !== this.epoch || this.offset !== since) break; // overtaken
        const got = page.messages.filter((m) => m.offset > since && m.offset <= to);
        if (got.length === 0 || got[0].offset !== since + 1) {
          if (lost) {
            /** @type {Gap} */
            const gap = { room: this.name, reason: 'skipped', epoch, from: since + 1 };
            gap.to = (got[0]?.offset ?? to + 1) - 1;
            this._emitBoth('gap', gap);
          }
          this.offset = (got[0]?.offset ?? to + 1) - 1;
        }
        for (const m of got) {
          if (m.offset === (this.offset ?? 0) + 1) this._deliver(m);
        }
        if (got.length === 0) break;
      }
    } catch (e) {
      // Disconnected: the resume replays from `offset`. Otherwise go on
      // without what could not be read.
      if (!(e instanceof HoldfastError && e.code === 'disconnected') && this.epoch === epoch) {
        if (lost && this.offset !== null && this.offset < to) {
          this._emitBoth('gap', { room: this.name, reason: 'skipped', epoch, from: this.offset + 1, to });
        }
        if (this.offset !== null && this.offset < to) this.offset = to;
      }
    } finally {
      this._filling = false;
    }
    this._release();
  }

  /** Hands over held messages that now follow in order. @private */
  _release() {
    while (this.offset !== null && !this._filling) {
      const next = this._held.get(this.offset + 1);
      if (!next) break;
      this._held.delete(next.offset);
      this._deliver(next);
    }
    if (this._held.size > 0 && !this._filling) {
      for (const o of [...this._held.keys()]) {
        if (this.offset !== null && o <= this.offset) this._held.delete(o);
      }
      if (this._held.size > 0) void this._fill(Math.min(...this._held.keys()) - 1, true);
    }
  }

  /**
   * Gives up on the messages before `offset + 1`.
   * @param {number} offset
   * @private
   */
  _skipTo(offset) {
    const from = (this.offset ?? 0) + 1;
    this._emitBoth('gap', { room: this.name, reason: 'skipped', epoch: this.epoch, from, to: offset });
    this.offset = offset;
    this._release();
  }

  /** @param {Message} m @private */
  _deliver(m) {
    this.offset = m.offset;
    this._emitBoth('message', m);
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} name
   * @param {RoomEvents[K]} event
   * @private
   */
  _emitBoth(name, event) {
    this._emit(name, event);
    this._link.relay(this, name, event);
  }
}
