/**
 * A connection to a Holdfast server that stays up: it reconnects with
 * back-off, resumes its session and rooms, and hands each room's messages
 * to the application once and in order.
 *
 * @extends {Emitter<ClientEvents>}
 */
export class Client extends Emitter<ClientEvents> {
    /**
     * @param {string} url The server's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
     * @param {ClientOptions} [options]
     */
    constructor(url: string, options?: ClientOptions);
    /** @private */
    private _url;
    /** @private */
    private _opts;
    /** @private @type {WebSocketConstructor} */
    private _WebSocket;
    /** @type {State} */
    state: State;
    /** The session id (kept across reconnects). @type {string | null} */
    session: string | null;
    /** The user id the server gave. @type {string | null} */
    user: string | null;
    /** The server's heartbeat interval. */
    heartbeatMs: number;
    /** @private @type {WebSocketLike | null} */
    private _ws;
    /** @private */
    private _nextId;
    /** @private @type {Map<number, Pending>} sent, waiting for an answer */
    private _inFlight;
    /** @private @type {Pending[]} waiting for the connection */
    private _queue;
    /** @private @type {Map<string, Room>} */
    private _rooms;
    /** @private */
    private _backoff;
    /** @private @type {number | null} the server's `draining` hint */
    private _drainHint;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    private _retryTimer;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    private _connectTimer;
    /** @private the latest connection attempt */
    private _attempt;
    /** @private @type {ReturnType<typeof setInterval> | null} */
    private _heartbeat;
    /** @private */
    private _lastHeard;
    /** @private */
    private _token;
    /** @private */
    private _needToken;
    /** @private @type {{ resolve: () => void, reject: (e: HoldfastError) => void }[]} */
    private _connectWaiters;
    /**
     * Connects (and keeps reconnecting); resolves once connected the first
     * time, rejects if the client stops first.
     *
     * @returns {Promise<void>}
     */
    connect(): Promise<void>;
    /**
     * Closes the connection for good: no reconnect; waiting requests fail
     * with `closed`.
     */
    close(): void;
    /**
     * The room named `name` (the same object every time), to listen on before
     * joining.
     *
     * @param {string} name
     * @returns {Room}
     */
    room(name: string): Room;
    /**
     * Joins `name`; answers its room.
     *
     * @param {string} name
     * @param {JoinOptions} [opts]
     * @returns {Promise<Room>}
     */
    join(name: string, opts?: JoinOptions): Promise<Room>;
    /**
     * Calls an RPC method of the server's application; answers its reply data.
     *
     * @param {string} method
     * @param {unknown} [data]
     * @param {{ timeoutMs?: number }} [opts]
     * @returns {Promise<any>}
     */
    rpc(method: string, data?: unknown, opts?: {
        timeoutMs?: number;
    }): Promise<any>;
    /**
     * Round trip to the server (the application `ping`); answers it in ms.
     *
     * @param {{ timeoutMs?: number }} [opts]
     */
    ping(opts?: {
        timeoutMs?: number;
    }): Promise<number>;
    /**
     * @param {Record<string, unknown>} frame
     * @param {{ timeoutMs?: number, idempotent?: boolean }} [opts]
     * @returns {Promise<any>}
     * @private
     */
    private _request;
    /** @param {Pending} pending @private */
    private _send;
    /** A request that timed out is forgotten. @param {Pending} pending @private */
    private _abandon;
    /** @param {Record<string, unknown>} frame @private */
    private _write;
    /** @param {State} state @param {Partial<StateChange>} [more] @private */
    private _setState;
    /** @private */
    private _open;
    /** @param {any} f @private */
    private _frame;
    /** @param {any} f @private */
    private _answer;
    /** @param {any} w @private */
    private _welcome;
    /** @private */
    private _clearConnectTimer;
    /**
     * Re-attaches the previous session and its rooms: the server replays, per
     * room, what followed the last offset seen.
     *
     * @param {string} previous
     * @param {{ session: string, user: string }} welcome This connection's own
     *   session and user, should the previous session not resume.
     * @private
     */
    private _resume;
    /** @param {boolean} resumed @private */
    private _ready;
    /** @private */
    private _startHeartbeat;
    /** @private */
    private _stopHeartbeat;
    /**
     * Gives up on the current socket (dead, or in a bad state) and reconnects.
     *
     * @param {number} code
     * @param {string} reason
     * @private
     */
    private _dropSocket;
    /**
     * The socket closed with `code`: reconnect, or stop, by the protocol's
     * close-code policy.
     *
     * @param {number} code
     * @param {string} reason
     * @private
     */
    private _closed;
    /** @param {number} code @param {string} reason @private */
    private _retry;
    /**
     * Stops for good.
     *
     * @param {number} code
     * @param {string} reason
     * @param {string} [errorCode] Set when the server's close is an error.
     * @private
     */
    private _stop;
    /** @param {string} code @param {string} message @private */
    private _failQueue;
}
export type Message = import("./room.js").Message;
export type PresenceDiff = import("./room.js").PresenceDiff;
export type Gap = import("./room.js").Gap;
export type JoinOptions = import("./room.js").JoinOptions;
/**
 * `idle`: not started; `connecting`: opening a socket or resuming;
 * `connected`: welcome (and resume) done, requests flow; `disconnected`:
 * waiting to reconnect; `closed`: stopped, by `close()` or a close code that
 * says not to come back.
 */
export type State = "idle" | "connecting" | "connected" | "disconnected" | "closed";
export type StateChange = {
    state: State;
    previous: State;
    /**
     * The close code, when a socket closed.
     */
    code?: number | undefined;
    /**
     * The close reason.
     */
    reason?: string | undefined;
    /**
     * When `disconnected`: how long until the next attempt.
     */
    delayMs?: number | undefined;
    /**
     * When `closed` by the server's refusal.
     */
    error?: HoldfastError | undefined;
};
export type Connected = {
    session: string;
    user: string;
    /**
     * Whether the previous session was resumed.
     */
    resumed: boolean;
};
export type ClientEvents = {
    state: StateChange;
    connected: Connected;
    /**
     * Every room's messages.
     */
    message: Message & {};
    presence_diff: PresenceDiff;
    gap: Gap;
};
/**
 * A WebSocket constructor: the browser's, Node 22's global, or e.g. the
 * `ws` package's.
 */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type WebSocketLike = {
    readyState: number;
    send: (data: string) => void;
    close: (code?: number, reason?: string) => void;
    onopen: ((ev: any) => void) | null;
    onmessage: ((ev: {
        data: any;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: any) => void) | null;
};
export type ClientOptions = {
    /**
     * A JWT (sent as the `token` query parameter).
     */
    token?: string | undefined;
    /**
     * Called before the
     * first connection, after the server closed with 1008 (expired token),
     * and after an attempt that failed before opening (a refused token looks
     * like that in a browser).
     */
    getToken?: (() => string | Promise<string>) | undefined;
    /**
     * Defaults to `globalThis.WebSocket`.
     */
    WebSocket?: WebSocketConstructor | undefined;
    /**
     * Default 10000.
     */
    requestTimeoutMs?: number | undefined;
    /**
     * Requests made while not connected:
     * wait for the connection (default; their timeout still runs) or fail at
     * once with `disconnected`.
     */
    offline?: "fail" | "wait" | undefined;
    /**
     * Most requests waiting while offline (default 1000).
     */
    maxQueued?: number | undefined;
    /**
     * How long an attempt may take to get
     * the server's welcome before it is given up (default 10000).
     */
    connectTimeoutMs?: number | undefined;
    /**
     * Default 500.
     */
    minReconnectDelayMs?: number | undefined;
    /**
     * Default 20000.
     */
    maxReconnectDelayMs?: number | undefined;
    /**
     * Default true.
     */
    reconnect?: boolean | undefined;
};
export type Pending = {
    frame: Record<string, unknown>;
    resolve: (v: any) => void;
    reject: (e: HoldfastError) => void;
    timer: ReturnType<typeof setTimeout>;
    /**
     * Re-sent after a reconnect rather than failed.
     */
    idempotent: boolean;
};
import { Emitter } from './emitter.js';
import { Room } from './room.js';
import { HoldfastError } from './errors.js';
