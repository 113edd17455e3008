// End-to-end scenarios for the debug console (public/), driven through
// headless Chromium against the real broker binary.
//   npm ci && npm run test:browser
// Env: SSE_BROKER_BIN (default target/release/sse-broker), CHROMIUM (default /usr/bin/chromium).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {
  ROOT, startBroker, stopBroker, launchBrowser, openConsole, publish, uniqueChannel,
} = require('./helpers');

const EventSourceState = { CONNECTING: 0, OPEN: 1, CLOSED: 2 };
const SCREENSHOT = path.join(ROOT, 'docs', 'screenshot.png');

let broker;
let browser;

before(async () => {
  broker = await startBroker();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await stopBroker(broker, 'SIGTERM');
});

// ---------- page helpers ----------

const connectionOf = (page, channel) => page.locator(`[data-testid="connection"][data-channels="${channel}"]`);
const statusOf = (page, channel) => connectionOf(page, channel).getByTestId('connection-status');
const logRow = (page, id) => page.locator(`[data-testid="log-row"][data-id="${id}"]`);

async function connect(page, channel) {
  await page.getByTestId('channels-input').fill(channel);
  await page.getByTestId('connect').click();
  await statusOf(page, channel).filter({ hasText: /^open$/ }).waitFor();
}

function assertNoProblems(problems, allowed = () => false) {
  const unexpected = problems.filter((p) => !allowed(p));
  for (const p of problems.filter(allowed)) process.stderr.write(`expected while the broker was down: ${p.text}\n`);
  assert.deepEqual(unexpected, [], `console errors/warnings:\n${unexpected.map((p) => `${p.kind}: ${p.text}`).join('\n')}`);
}

/** Runs `scenario` with a fresh page and fails on any console error or warning. */
async function withConsole(scenario, allowed) {
  const session = await openConsole(browser, broker.url);
  try {
    await scenario(session);
    assertNoProblems(session.problems, allowed);
  } finally {
    await session.close();
  }
}

// ---------- scenarios ----------

test('the page loads without console errors and shows its tab id', () => withConsole(async ({ page }) => {
  await page.getByTestId('kill-status').filter({ hasText: 'listening' }).waitFor();
  await page.locator('#channels-updated', { hasText: 'updated' }).waitFor();
  await page.locator('#pulses-updated', { hasText: 'updated' }).waitFor();
  assert.match(await page.getByTestId('tab-id').textContent(), /^tab-\d+-[a-z0-9]+$/);
}));

test('opening / subscribes to test at once, and the demo publisher\'s events arrive', async () => {
  const { page, problems, close } = await openConsole(browser, broker.url, undefined, '');
  try {
    await statusOf(page, 'test').filter({ hasText: /^open$/ }).waitFor();
    const answer = await publish(broker.url, 'test', { Message: 'hello newcomer', Value: 1 });
    await logRow(page, answer.id).waitFor();
    const custom = await openConsole(browser, broker.url, undefined, '?channels=alpha,beta');
    try {
      await statusOf(custom.page, 'alpha').filter({ hasText: /^open$/ }).waitFor();
      await statusOf(custom.page, 'beta').filter({ hasText: /^open$/ }).waitFor();
      assert.equal(await connectionOf(custom.page, 'test').count(), 0);
    } finally {
      await custom.close();
    }
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test('connecting to a channel shows the connection as "open"', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('open');
  await page.getByTestId('channels-input').fill(channel);
  await page.getByTestId('connect').click();
  await statusOf(page, channel).filter({ hasText: /^open$/ }).waitFor();
  assert.equal(await connectionOf(page, channel).getAttribute('data-status'), 'open');
}));

test('an event published from the form appears in the log', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('form');
  await connect(page, channel);
  await page.getByTestId('publish-channel').fill(channel);
  await page.getByTestId('publish-event').fill('e2e.greeting');
  await page.getByTestId('publish-body').fill('{"hello": "from the form"}');
  await page.getByTestId('json-hint').filter({ hasText: 'Valid JSON' }).waitFor();
  await page.getByTestId('publish-send').click();
  await page.getByTestId('publish-result').filter({ hasText: 'Published' }).waitFor();
  const row = page.locator(`[data-testid="log-row"][data-channel="${channel}"][data-type="e2e.greeting"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /"hello": "from the form"/);
}));

test('an event published from outside appears within a second', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('outside');
  await connect(page, channel);
  const { id } = await publish(broker.url, channel, { Message: 'published by the test', Value: 42 });
  await logRow(page, id).waitFor({ timeout: 1000 });
  assert.equal(await logRow(page, id).getAttribute('data-kind'), 'live');

  // A few more events of different shapes, then the screenshot for the docs.
  await page.getByTestId('types-input').fill('order.created');
  await page.getByTestId('types-add').click();
  await page.getByTestId('types-list').filter({ hasText: 'order.created' }).waitFor();
  await publish(broker.url, channel, 'a plain text event');
  await publish(broker.url, channel, { order: 7, items: ['tea', 'scones'] }, 'order.created');
  const last = await publish(broker.url, channel, { Message: 'Periodic Event', Value: 17 });
  await logRow(page, last.id).waitFor({ timeout: 1000 });
  await page.locator(`[data-testid="log-row"][data-type="order.created"]`).waitFor({ timeout: 1000 });
  await page.locator(`[data-testid="channel-row"][data-channel="${channel}"]`).waitFor();
  await page.locator('[data-testid="pulse-row"][data-self="true"]').waitFor();
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
}));

test('a multi-channel stream attributes each event to its channel', () => withConsole(async ({ page }) => {
  const a = uniqueChannel('multi-a');
  const b = uniqueChannel('multi-b');
  await page.getByTestId('channels-input').fill(`${a}, ${b}`);
  await page.getByTestId('multi-input').check();
  await page.getByTestId('connect').click();
  await statusOf(page, `${a},${b}`).filter({ hasText: /^open$/ }).waitFor();
  assert.equal(await page.locator('[data-testid="connection"]').count(), 1, 'one entry for the multi-channel stream');
  const fromA = await publish(broker.url, a, { to: 'a' });
  const fromB = await publish(broker.url, b, { to: 'b' });
  const rowA = page.locator(`[data-testid="log-row"][data-channel="${a}"]`);
  const rowB = page.locator(`[data-testid="log-row"][data-channel="${b}"]`);
  await rowA.waitFor();
  await rowB.waitFor();
  assert.match(await rowA.textContent(), /"to": "a"/);
  assert.match(await rowB.textContent(), /"to": "b"/);
  // The cursor id names the event's own channel first.
  assert.ok((await rowA.getAttribute('data-id')).startsWith(`${a}=${fromA.id}`));
  assert.ok((await rowB.getAttribute('data-id')).startsWith(`${b}=${fromB.id}`));
}));

test('after disconnect, missed events are replayed on reconnect and marked', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('replay');
  await connect(page, channel);
  const first = await publish(broker.url, channel, { n: 0 });
  await logRow(page, first.id).waitFor();

  await connectionOf(page, channel).getByTestId('connection-disconnect').click();
  await statusOf(page, channel).filter({ hasText: /^closed$/ }).waitFor();
  const missed = [];
  for (let n = 1; n <= 3; n += 1) missed.push((await publish(broker.url, channel, { n })).id);

  await connectionOf(page, channel).getByTestId('connection-reconnect').click();
  await statusOf(page, channel).filter({ hasText: /^open$/ }).waitFor();
  for (const id of missed) {
    await logRow(page, id).waitFor();
    assert.equal(await logRow(page, id).getAttribute('data-kind'), 'replayed', `event ${id} should be marked replayed`);
    assert.equal(await logRow(page, id).getByTestId('mark-replayed').textContent(), 'replayed');
  }
  assert.equal(await page.locator(`[data-testid="log-row"][data-channel="${channel}"]`).count(), 5,
    'the first event, the replay notice and the three replayed events');
  assert.equal(await page.locator('[data-testid="connection"]').count(), 1, 'still exactly one connection entry');
}));

test('reconnecting many times never leaves a duplicate EventSource', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('dup');
  await connect(page, channel);
  for (let i = 0; i < 5; i += 1) {
    await connectionOf(page, channel).getByTestId('connection-reconnect').click();
  }
  await statusOf(page, channel).filter({ hasText: /^open$/ }).waitFor();
  const streams = await page.evaluate(() => app.state.connections.map((c) => c.es && c.es.readyState));
  assert.deepEqual(streams, [EventSourceState.OPEN]);
  // Server side: exactly one subscriber for the channel once the old ones are gone.
  const { id } = await publish(broker.url, channel, { once: true });
  await logRow(page, id).waitFor();
  assert.equal(await page.locator(`[data-testid="log-row"][data-id="${id}"]`).count(), 1, 'the event is shown once');
}));

test('the log keeps only the newest 500 rows under a burst', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('burst');
  await page.getByTestId('pulse-on-message').uncheck();
  await connect(page, channel);
  let last;
  for (let n = 1; n <= 600; n += 1) last = await publish(broker.url, channel, { n });
  await logRow(page, last.id).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 500);
  assert.match(await page.locator('[data-testid="log-row"]').first().textContent(), /"n": 600/);
  assert.match(await page.locator('[data-testid="log-row"]').last().textContent(), /"n": 101/);
}));

test('a broker restart shows reconnecting, then open again, and a gap notice', async () => {
  let downAt = Infinity;
  let upAt = Infinity;
  // While the broker is down, Chromium itself logs the refused requests
  // (EventSource retries, table polling): those, and only those, are expected.
  const refusedWhileDown = (p) => p.at >= downAt && p.at <= upAt + 2000
    && /net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|INCOMPLETE_CHUNKED_ENCODING)/.test(p.text);
  await withConsole(async ({ page }) => {
    const channel = uniqueChannel('restart');
    await connect(page, channel);
    const before = await publish(broker.url, channel, { beforeRestart: true });
    await logRow(page, before.id).waitFor();

    const port = broker.port;
    downAt = Date.now();
    await stopBroker(broker, 'SIGKILL');
    await statusOf(page, channel).filter({ hasText: /^reconnecting \(attempt \d+\)$/ }).waitFor();
    broker = await startBroker(`127.0.0.1:${port}`);
    upAt = Date.now();

    await statusOf(page, channel).filter({ hasText: /^open$/ }).waitFor({ timeout: 15000 });
    const gap = page.locator(`[data-testid="log-row"][data-kind="gap"][data-channel="${channel}"]`);
    await gap.waitFor();
    assert.match(await gap.textContent(), /unknown-epoch|history-trimmed/);
    assert.match(await gap.getByTestId('mark-gap').textContent(), /gap/);

    const after = await publish(broker.url, channel, { afterRestart: true });
    await logRow(page, after.id).waitFor({ timeout: 1000 });
  }, refusedWhileDown);
});

test('"kill this tab" closes all its streams and says so', () => withConsole(async ({ page }) => {
  const channel = uniqueChannel('kill');
  await connect(page, channel);
  await page.getByTestId('kill-status').filter({ hasText: 'listening' }).waitFor();
  await page.getByTestId('kill-tab').click();
  await page.getByTestId('killed-banner').filter({ hasText: 'This tab was killed by the server' }).waitFor();
  await statusOf(page, channel).filter({ hasText: /^closed$/ }).waitFor();
  await page.getByTestId('kill-status').filter({ hasText: 'killed' }).waitFor();
  const open = await page.evaluate(() => app.state.connections.filter((c) => c.es).length + (app.state.killStream ? 1 : 0));
  assert.equal(open, 0, 'no EventSource left open');
}));

test('"kill all" kills every open tab', () => withConsole(async ({ page }) => {
  const other = await openConsole(browser, broker.url);
  try {
    for (const p of [page, other.page]) {
      await p.getByTestId('kill-status').filter({ hasText: 'listening' }).waitFor();
      // A tab is known to the broker once it has pulsed.
      const tabId = await p.getByTestId('tab-id').textContent();
      await p.locator(`[data-testid="pulse-row"][data-tab-id="${tabId}"]`).waitFor();
    }
    await page.getByTestId('kill-all').click();
    await page.getByTestId('killed-banner').waitFor();
    await other.page.getByTestId('killed-banner').waitFor();
    assertNoProblems(other.problems);
  } finally {
    await other.close();
  }
}));

test('the pulse table shows this tab as alive', () => withConsole(async ({ page }) => {
  const tabId = await page.getByTestId('tab-id').textContent();
  const row = page.locator('[data-testid="pulse-row"][data-self="true"]');
  await row.waitFor();
  assert.equal(await row.getAttribute('data-tab-id'), tabId);
  assert.equal(await row.getByTestId('pulse-state').textContent(), 'alive');
  assert.match(await row.textContent(), /this tab/);
}));
