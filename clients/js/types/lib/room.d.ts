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
export class Room extends Emitter<RoomEvents> {
    /**
     * @param {string} name
     * @param {RoomLink} link
     */
    constructor(name: string, link: RoomLink);
    /** The room's name. */
    name: string;
    /** @private */
    private _link;
    /** Whether the application wants to be a member (kept across reconnects). */
    joined: boolean;
    /** The room's epoch, as last seen. */
    epoch: string;
    /**
     * The offset of the last message handed over; `null` while the next
     * message sets it (after an epoch change whose offset is unknown).
     * @type {number | null}
     */
    offset: number | null;
    /** @private @type {Map<number, Message>} messages past a gap */
    private _held;
    /** @private */
    private _filling;
    /** @private paused during a resume: messages wait for its answer */
    private _paused;
    /** @private @type {Message[]} */
    private _waiting;
    /**
     * Messages that came while a join's answer was on its way (a
     * WebSocket may hand over several frames before the answer's
     * continuation runs); `null` when no join is.
     * @private @type {Message[] | null}
     */
    private _joinBuffer;
    /**
     * Joins the room. With `history`, the earlier messages come first.
     *
     * @param {JoinOptions} [opts]
     * @returns {Promise<{ offset: number, epoch: string, data?: unknown }>}
     */
    join(opts?: JoinOptions): Promise<{
        offset: number;
        epoch: string;
        data?: unknown;
    }>;
    /** Leaves the room; its messages stop, and a later join starts afresh. */
    leave(): Promise<void>;
    /**
     * Publishes `data`; answers the offset it took.
     *
     * @param {unknown} data
     * @param {{ timeoutMs?: number }} [opts]
     * @returns {Promise<{ offset: number }>}
     */
    publish(data: unknown, opts?: {
        timeoutMs?: number;
    }): Promise<{
        offset: number;
    }>;
    /**
     * Who is in the room, one entry per user.
     *
     * @returns {Promise<PresenceMember[]>}
     */
    presence(): Promise<PresenceMember[]>;
    /**
     * Messages after `since`, oldest first, at most `limit` (≤ 1000).
     *
     * @param {{ since?: number, limit?: number, timeoutMs?: number }} [opts]
     * @returns {Promise<HistoryPage>}
     */
    history(opts?: {
        since?: number;
        limit?: number;
        timeoutMs?: number;
    }): Promise<HistoryPage>;
    /**
     * @internal
     * A `message` frame of this room.
     * @param {Message} m
     */
    _message(m: Message): void;
    /**
     * @internal
     * An `epoch` frame: offsets restart in `epoch`, after `offset`.
     * @param {string} epoch
     * @param {number} offset
     */
    _epoch(epoch: string, offset: number): void;
    /**
     * @internal
     * @param {PresenceDiff} diff
     */
    _presenceDiff(diff: PresenceDiff): void;
    /**
     * @internal
     * A resume began: messages wait for its answer.
     */
    _pause(): void;
    /**
     * @internal
     * The resume's answer for this room (`undefined`: it was not part of it).
     * @param {{ replayed: number, complete: boolean, epoch: string } | undefined} answer
     */
    _resumed(answer: {
        replayed: number;
        complete: boolean;
        epoch: string;
    } | undefined): void;
    /**
     * @internal
     * The connection closed: what waits is replayed by the next resume.
     */
    _disconnected(): void;
    /**
     * @param {string} epoch
     * @param {number | null} offset
     * @private
     */
    private _newEpoch;
    /** @param {Message} m @private */
    private _take;
    /**
     * Reads history up to offset `to` and hands it over in order, then what
     * was held. `lost`: the messages went missing (a gap is reported if
     * history no longer has them), rather than being asked for.
     *
     * @param {number} to
     * @param {boolean} lost
     * @private
     */
    private _fill;
    /** Hands over held messages that now follow in order. @private */
    private _release;
    /**
     * Gives up on the messages before `offset + 1`.
     * @param {number} offset
     * @private
     */
    private _skipTo;
    /** @param {Message} m @private */
    private _deliver;
    /**
     * @template {keyof RoomEvents} K
     * @param {K} name
     * @param {RoomEvents[K]} event
     * @private
     */
    private _emitBoth;
}
export type Message = {
    room: string;
    /**
     * Per room, from 1, one more per message of an epoch.
     */
    offset: number;
    /**
     * The publisher's user id (`"server"` for the server API).
     */
    from: string;
    data: unknown;
};
export type PresenceMember = {
    user: string;
    sessions: number;
};
export type PresenceDiff = {
    room: string;
    joins: PresenceMember[];
    leaves: PresenceMember[];
};
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
 */
export type Gap = {
    room: string;
    reason: "epoch" | "incomplete" | "skipped";
    epoch: string;
    from?: number | undefined;
    to?: number | undefined;
};
export type HistoryPage = {
    room: string;
    epoch: string;
    messages: Message[];
    /**
     * Whether history reached back to `since + 1`.
     */
    complete: boolean;
};
export type RoomEvents = {
    message: Message;
    presence_diff: PresenceDiff;
    gap: Gap;
};
export type JoinOptions = {
    /**
     * Deliver up to this many earlier messages
     * first, as `message` events, in order with what follows.
     */
    history?: number | undefined;
    timeoutMs?: number | undefined;
};
/**
 * What a room needs of its client.
 */
export type RoomLink = {
    request: (frame: Record<string, unknown>, opts?: {
        timeoutMs?: number;
        idempotent?: boolean;
    }) => Promise<any>;
    relay: (room: Room, name: keyof RoomEvents, event: any) => void;
    forget: (room: Room) => void;
    adopt: (room: Room) => void;
};
import { Emitter } from './emitter.js';
