// The real `holdfast` release binary, started by a test and always stopped.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, 'target');

/** The binary under test: `HOLDFAST_BIN`, else the release build. */
export const binary = process.env.HOLDFAST_BIN ?? join(targetDir, 'release', 'holdfast');

/**
 * Whether the binary is there; without it (a laptop that did not build the
 * release binary) the tests say they are skipped, and under CI=true fail.
 */
export function skipUnlessBuilt() {
  if (existsSync(binary)) return false;
  if (process.env.CI === 'true') {
    throw new Error(`${binary} is missing and CI=true requires it: run cargo build --release`);
  }
  return `SKIPPED: ${binary} is missing; run cargo build --release`;
}

/** Every server still running, killed if the test process exits early. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * A server process over one data directory, which outlives restarts.
 */
export class Server {
  /** @param {Record<string, string>} [env] settings as HOLDFAST__ variables */
  constructor(env = {}) {
    this.env = env;
    this.dir = mkdtempSync(join(tmpdir(), 'holdfast-js-'));
    this.port = 0;
    this.child = null;
    this.log = '';
  }

  /** Starts it (on the port it had before, after a restart); resolves once it listens. */
  async start() {
    const env = {
      ...process.env,
      HOLDFAST__SERVER__PORT: String(this.port),
      HOLDFAST__LOG__FORMAT: 'json',
      HOLDFAST__WS__DRAIN_SPREAD_MS: '300',
      HOLDFAST__WS__RATE_PER_SEC: '100000',
      HOLDFAST__WS__RATE_BURST: '100000',
      ...this.env,
    };
    const child = spawn(binary, [], { cwd: this.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
    });
    const listening = new Promise((resolve, reject) => {
      const onData = (chunk) => {
        this.log += chunk;
        const m = /"addr":"([^"]+)"/.exec(this.log);
        if (m) resolve(m[1]);
      };
      child.stdout.setEncoding('utf8').on('data', onData);
      child.stderr.setEncoding('utf8').on('data', onData);
      child.on('exit', (code) => reject(new Error(`holdfast exited (${code}) before listening:\n${this.log}`)));
    });
    const addr = await withTimeout(listening, 20000, 'the server to listen');
    this.addr = addr;
    this.port = Number(addr.split(':').pop());
    this.log = '';
    return this;
  }

  /** `ws://…/ws`. */
  get url() {
    return `ws://${this.addr}/ws`;
  }

  /** Sends `signal`; resolves with the exit. */
  async stop(signal = 'SIGTERM') {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    return withTimeout(this.exited, 20000, `the server to exit after ${signal}`);
  }

  /** Stops it (SIGKILL if need be) and removes its data. */
  async dispose() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves once `cond()` holds; rejects naming `what` after `ms`. */
export async function until(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An HS256 JWT for `sub`, valid for `seconds`, signed with `secret`. */
export function token(secret, sub, seconds, claims = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: now + seconds, ...claims })}`;
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}
