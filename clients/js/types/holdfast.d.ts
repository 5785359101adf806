export { Client } from "./lib/client.js";
export { Room } from "./lib/room.js";
export { HoldfastError } from "./lib/errors.js";
export { Backoff } from "./lib/backoff.js";
