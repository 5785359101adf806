// @ts-check
/**
 * holdfast-client: the JavaScript client of Holdfast, for browsers and
 * Node 20+ (docs/PROTOCOL.md is the wire contract it speaks).
 *
 * ```js
 * import { Client } from 'holdfast-client'; // or '/client/holdfast.js' from the server
 * const client = new Client('ws://127.0.0.1:8080/ws', { getToken: () => fetchToken() });
 * await client.connect();
 * const lobby = client.room('lobby');
 * lobby.on('message', (m) => console.log(m.offset, m.from, m.data));
 * lobby.on('gap', (g) => refetch(g.room));
 * await lobby.join({ history: 50 });
 * await lobby.publish({ text: 'hello' });
 * const printers = await client.rpc('printers.list');
 * ```
 *
 * @module
 */
export { Client } from './lib/client.js';
export { Room } from './lib/room.js';
export { HoldfastError } from './lib/errors.js';
export { Backoff } from './lib/backoff.js';
