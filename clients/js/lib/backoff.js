// @ts-check
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
  constructor(minMs, maxMs, random = Math.random) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The next delay, in ms. */
  next() {
    const ceiling = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }

  /** Back to the first delay (after a connection that worked). */
  reset() {
    this.attempt = 0;
  }
}
