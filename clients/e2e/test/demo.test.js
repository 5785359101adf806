// The first-run demo in a real browser: two pages chat, a moderated room
// refuses, and a SIGTERM restart under both pages loses nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Server, skipUnlessBuilt } from '../../js/test/server.js';
import { launch, screenshot, skipWithoutChromium } from './browser.js';

const skip = skipUnlessBuilt() || skipWithoutChromium();
if (skip) console.log(skip);

/** The page's messages in the current room: [offset, name, text]. */
function messages(page) {
  return page.$$eval('#messages li', (lis) =>
    lis.map((li) => [Number(li.dataset.offset), li.querySelector('.who')?.textContent, li.querySelector('.text')?.textContent]),
  );
}

/** Opens the demo as `name`, connected. */
async function open(browser, server, name) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log(`${name}: page error: ${e.message}`));
  await page.goto(`http://${server.addr}/`);
  await page.fill('#name', name);
  await page.waitForSelector('#state[data-state=connected]');
  return page;
}

/** Sends `text` from `page` in its current room. */
async function say(page, text) {
  await page.fill('#input', text);
  await page.click('#send');
}

/** Waits until `page` shows a message with `text`. */
function shows(page, text) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages .text')].some((e) => e.textContent === t),
    text,
  );
}

describe('the demo in Chromium', { skip }, () => {
  let browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  it('two pages chat; the moderated room refuses a banned word', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const [ann, bob] = [await open(browser, server, 'ann'), await open(browser, server, 'bob')];
    await say(ann, 'hello from ann');
    await shows(bob, 'hello from ann');
    await say(bob, 'hi ann');
    for (const page of [ann, bob]) await shows(page, 'hi ann'); // each page in its own time
    assert.deepEqual(await messages(bob), [
      [1, 'ann', 'hello from ann'],
      [2, 'bob', 'hi ann'],
    ]);
    await bob.waitForFunction(() => document.querySelectorAll('#presence li').length === 2);

    for (const page of [ann, bob]) await page.click('button[data-room="demo:moderated"]');
    await ann.waitForSelector('#rules:not([hidden])');
    await say(ann, 'cheap spam here');
    await ann.waitForSelector('#error:not([hidden])');
    assert.match(await ann.textContent('#error'), /banned_word/);
    await say(ann, '   trimmed by the moderator   ');
    await shows(bob, 'trimmed by the moderator');
    assert.deepEqual(await messages(bob), [[1, 'ann', 'trimmed by the moderator']], 'the refused one took no offset');
    await ann.waitForFunction(() => document.querySelector('#health-status')?.textContent === 'healthy');
    console.log(await screenshot(ann, 'demo-chat-ann'));
    console.log(await screenshot(bob, 'demo-chat-bob'));
    await Promise.all([ann.close(), bob.close()]);
  });

  it('a SIGTERM restart under two pages: both carry on, nothing lost or repeated', async () => {
    const server = await new Server().start();
    after(() => server.dispose());
    const [ann, bob] = [await open(browser, server, 'ann'), await open(browser, server, 'bob')];
    for (const text of ['one', 'two', 'three']) await say(ann, text);
    await shows(bob, 'three');
    const exit = await server.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null });
    await ann.waitForSelector('#state[data-state=disconnected]');
    await server.start();
    for (const page of [ann, bob]) await page.waitForSelector('#state[data-state=connected]', { timeout: 20000 });
    for (const text of ['four', 'five', 'six']) await say(bob, text);
    for (const page of [ann, bob]) await shows(page, 'six'); // each page in its own time
    const expected = [
      [1, 'ann', 'one'],
      [2, 'ann', 'two'],
      [3, 'ann', 'three'],
      [4, 'bob', 'four'],
      [5, 'bob', 'five'],
      [6, 'bob', 'six'],
    ];
    assert.deepEqual(await messages(ann), expected);
    assert.deepEqual(await messages(bob), expected);
    assert.equal(await ann.isHidden('#notice'), true, 'no gap reported');
    // The README's quick start, as typed into the browser's console.
    await ann.evaluate(async () => {
      const { Client } = await import('/client/holdfast.js');
      const client = new Client(`ws://${location.host}/ws`);
      await client.connect();
      const lobby = await client.join('demo:lobby');
      await lobby.publish({ name: 'console', text: 'hello from the console' });
    });
    await shows(bob, 'hello from the console');
    await shows(ann, 'hello from the console');
    assert.deepEqual((await messages(bob)).at(-1), [7, 'console', 'hello from the console']);
    console.log(await screenshot(ann, 'demo-after-restart-ann'));
    console.log(await screenshot(bob, 'demo-after-restart-bob'));
    await Promise.all([ann.close(), bob.close()]);
  });
});
