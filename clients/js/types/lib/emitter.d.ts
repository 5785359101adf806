/**
 * A small typed event emitter.
 *
 * @template {Record<string, any>} Events
 */
export class Emitter<Events extends Record<string, any>> {
    /** @type {Map<keyof Events, Set<(event: any) => void>>} */
    _listeners: Map<keyof Events, Set<(event: any) => void>>;
    /**
     * Calls `listener` with every `event`; answers a function that stops it.
     *
     * @template {keyof Events} K
     * @param {K} event
     * @param {(event: Events[K]) => void} listener
     * @returns {() => void}
     */
    on<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): () => void;
    /**
     * Stops calling `listener` with `event`.
     *
     * @template {keyof Events} K
     * @param {K} event
     * @param {(event: Events[K]) => void} listener
     */
    off<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): void;
    /**
     * @template {keyof Events} K
     * @param {K} event
     * @param {Events[K]} value
     * @protected
     */
    protected _emit<K extends keyof Events>(event: K, value: Events[K]): void;
}
