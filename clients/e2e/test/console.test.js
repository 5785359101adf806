// The operator console in a real browser: a chaos crash of rooms-0 shows
// up, and so does its restart; a wrong token gets a clear error; the token
// goes into no URL and no localStorage.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Server, skipUnlessBuilt } from '../../js/test/server.js';
import { launch, screenshot, skipWithoutChromium } from './browser.js';

const skip = skipUnlessBuilt() || skipWithoutChromium();
if (skip) console.log(skip);

const TOKEN = 'console-test-admin-token-0123456789';

/** Opens the console and signs in with `token`. */
async function signIn(browser, server, token) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(`http://${server.addr}/admin/`);
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
  return page;
}

describe('the operator console in Chromium', { skip }, () => {
  let browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  it('shows a chaos crash of rooms-0 and its restart', async () => {
    const server = await new Server({ HOLDFAST__ADMIN__TOKEN: TOKEN, HOLDFAST__ADMIN__CHAOS: 'true' }).start();
    after(() => server.dispose());
    const page = await signIn(browser, server, TOKEN);
    const rooms0 = '.node[data-actor="rooms-0"]';
    await page.waitForSelector(`${rooms0}[data-status=healthy] .meta[data-restarts="0"]`);
    await page.waitForSelector('.node[data-actor="rooms"] + ul .node[data-actor="rooms-0"]');
    // Crashed from outside the page: it must show by itself within 2 s.
    const started = Date.now();
    const res = await fetch(`http://${server.addr}/admin/actors/rooms-0/crash`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 202);
    await page.waitForSelector(`${rooms0}[data-status=healthy] .meta[data-restarts="1"]`, { timeout: 10000 });
    const shownMs = Date.now() - started;
    assert.ok(shownMs < 2000, `the crash and restart showed after ${shownMs} ms`);
    // And from its own button.
    await page.click(`${rooms0} button[data-action=crash]`);
    await page.waitForSelector(`${rooms0}[data-status=healthy] .meta[data-restarts="2"]`, { timeout: 10000 });
    assert.match(await page.textContent(`${rooms0} .failure`), /crashed on purpose/);
    await page.waitForSelector('#events li[data-kind="actor_restarted"]');
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
    assert.ok(!page.url().includes(TOKEN), 'the token is in no URL');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('holdfast-admin-token')), TOKEN);
    await page.waitForFunction(() => document.querySelector('#v-connections')?.textContent !== '–');
    console.log(`restart shown ${shownMs} ms after a crash through the API`);
    console.log(await screenshot(page, 'console-after-crash'));
    await page.close();
  });

  it('a wrong admin token gets a clear error', async () => {
    const server = await new Server({ HOLDFAST__ADMIN__TOKEN: TOKEN }).start();
    after(() => server.dispose());
    const page = await signIn(browser, server, 'not-the-admin-token-at-all');
    await page.waitForSelector('#error:not([hidden])');
    assert.match(await page.textContent('#error'), /admin token was refused/);
    assert.equal(await page.$$eval('.node', (n) => n.length), 0, 'no tree shown');
    console.log(await screenshot(page, 'console-wrong-token'));
    await page.close();
  });
});
