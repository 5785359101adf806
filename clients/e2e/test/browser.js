// Debian's Chromium, driven by playwright-core (no browser download), and
// screenshots under target/screenshots/.
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const shots = resolve(here, '../../../target/screenshots');

/** The system Chromium: `CHROMIUM`, else Debian's. */
export const executable = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser tests cannot run here (false: they can); fatal under CI=true. */
export function skipWithoutChromium() {
  if (existsSync(executable)) return false;
  if (process.env.CI === 'true') throw new Error(`${executable} is missing and CI=true requires it: apt-get install chromium`);
  return `SKIPPED: ${executable} is missing (apt-get install chromium)`;
}

/** A headless Chromium with no network beyond what the page asks for. */
export function launch() {
  return chromium.launch({
    executablePath: executable,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Saves a screenshot of `page` as target/screenshots/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(shots, { recursive: true });
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
