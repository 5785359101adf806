// @ts-check
/**
 * Errors a request can reject with.
 *
 * `code` is the protocol's error code (`not_member`, `forbidden`,
 * `rate_limited`, `unavailable`, `unknown_method`, `timeout`, or an
 * application's own code such as `printer_busy`), or one of the client's:
 *
 * - `timeout` with `local: true`: no answer within the request's timeout
 *   (the request may or may not have taken effect);
 * - `disconnected`: the connection closed before the answer (a publish or
 *   rpc may or may not have taken effect), or the client is offline and
 *   `offline` is `"fail"`;
 * - `queue_full`: offline, and `maxQueued` requests already wait;
 * - `closed`: the client was closed.
 */
export class HoldfastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{ local?: boolean, request?: string }} [more]
   */
  constructor(code, message, more = {}) {
    super(message);
    this.name = 'HoldfastError';
    /** The protocol's or the client's error code. */
    this.code = code;
    /** Whether the client made this error, not the server. */
    this.local = more.local ?? false;
    /** The request type that failed (`join`, `publish`, `rpc`, ...). */
    this.request = more.request;
  }
}
