// @ts-check
/**
 * A small typed event emitter.
 *
 * @template {Record<string, any>} Events
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(event: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * Calls `listener` with every `event`; answers a function that stops it.
   *
   * @template {keyof Events} K
   * @param {K} event
   * @param {(event: Events[K]) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * Stops calling `listener` with `event`.
   *
   * @template {keyof Events} K
   * @param {K} event
   * @param {(event: Events[K]) => void} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} value
   * @protected
   */
  _emit(event, value) {
    for (const listener of [...(this._listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        // A listener's bug must not break the connection's bookkeeping.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
