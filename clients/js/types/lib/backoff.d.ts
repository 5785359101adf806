/**
 * Full-jitter exponential back-off: the n-th delay is uniform in
 * `[0, min(maxMs, minMs * 2^n))`, so that clients that lost the same server
 * do not come back at the same instant.
 */
export class Backoff {
    /**
     * @param {number} minMs
     * @param {number} maxMs
     * @param {() => number} [random]
     */
    constructor(minMs: number, maxMs: number, random?: () => number);
    minMs: number;
    maxMs: number;
    random: () => number;
    attempt: number;
    /** The next delay, in ms. */
    next(): number;
    /** Back to the first delay (after a connection that worked). */
    reset(): void;
}
