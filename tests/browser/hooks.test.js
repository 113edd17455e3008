// The application's authorization hook in a real browser (docs/hooks.md):
// the small web application of tests/apps/hook_app.py (cookie sessions, a
// login form) is the broker's hook, on another origin than the broker.
// - Chromium logs in through the form; the application's page opens an
//   EventSource with withCredentials on the broker, which sends the
//   session cookie; the hook allows it and events arrive;
// - a browser that is not logged in is refused (the EventSource gives up);
// - logging out ends the stream (broker.revoked) and the browser's
//   reconnect is refused by the hook, so the EventSource gives up.
//   npm ci && npm run test:browser
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { ROOT, startBroker, stopBroker, launchBrowser, publish } = require('./helpers');

/** How long a page waits for a condition before the test fails (a guard against hanging). */
const PATIENCE_MS = 15000;

let app;
let broker;
let browser;

/** Starts tests/apps/hook_app.py; resolves with its URL once it listens. */
function startApp() {
  const child = spawn('python3', [path.join(ROOT, 'tests/apps/hook_app.py')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the application did not start')), PATIENCE_MS);
    child.stdout.on('data', (chunk) => {
      out += chunk.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://127.0.0.1:${m[1]}` });
      }
    });
    child.once('error', reject);
  });
}

/** Sets the application's knobs. */
async function control(knobs) {
  const res = await fetch(`${app.url}/control`, { method: 'POST', body: JSON.stringify(knobs) });
  assert.equal(res.status, 204);
}

before(async () => {
  app = await startApp();
  broker = await startBroker('127.0.0.1:0', {
    env: {
      SSE_BROKER__DEMO__ENABLED: 'false',
      SSE_BROKER__HOOKS__SUBSCRIBE_URL: `${app.url}/hook`,
      // The application's page is another origin and sends its cookie.
      SSE_BROKER__CORS__ALLOWED_ORIGINS: `["${app.url}"]`,
      SSE_BROKER__CORS__ALLOW_CREDENTIALS: 'true',
    },
  });
  await control({ broker: broker.url });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await stopBroker(broker, 'SIGTERM');
  if (app) app.child.kill('SIGKILL');
});

/** Waits in the page until `check` (a function body over `window`) holds. */
async function waitIn(page, check, what) {
  try {
    await page.waitForFunction(check, null, { timeout: PATIENCE_MS, polling: 50 });
  } catch (err) {
    const state = await page.evaluate(() => ({
      opened: window.opened, events: window.events, errors: window.errors,
      readyState: window.readyState, revoked: window.revoked,
    }));
    throw new Error(`${what}: ${err.message}\npage state: ${JSON.stringify(state)}`);
  }
}

test('a logged-in page streams with its session cookie; logging out ends the stream for good', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${app.url}/`);
    await page.fill('input[name=user]', 'alice');
    await page.fill('input[name=password]', 'secret');
    await page.click('button');
    await page.waitForSelector('#who');
    assert.equal(await page.textContent('#who'), 'alice');
    await waitIn(page, () => window.opened === true, 'the EventSource opened');

    await publish(broker.url, 'user.alice', { hello: 'alice' });
    await waitIn(page, () => window.events.length === 1, 'the event arrived');
    assert.deepEqual(JSON.parse(await page.evaluate(() => window.events[0])), { hello: 'alice' });

    const calls = await (await fetch(`${app.url}/calls`)).json();
    assert.match(calls.last.cookie, /app_session=/, 'the browser sent its session cookie');
    assert.equal(calls.last.origin, app.url, 'and its origin');

    // Log out (the form posts to the application, which revokes); the page
    // is left, so keep the EventSource's own state first in a second page.
    const watcher = await context.newPage();
    await watcher.goto(`${app.url}/`);
    await waitIn(watcher, () => window.opened === true, 'the second page opened');
    const answer = await watcher.evaluate(async () => (await fetch('/logout', { method: 'POST' })).json());
    assert.equal(answer.user, 'alice');
    assert.equal(answer.streams, 2, 'both pages\' streams ended');
    await waitIn(watcher, () => window.revoked !== undefined, 'broker.revoked arrived');
    // EventSource reconnects after the close; the hook refuses the dead
    // session, so it gives up (CLOSED).
    await waitIn(watcher, () => window.readyState === 2, 'the reconnect was refused');
  } finally {
    await context.close();
  }
});

test('a browser that is not logged in is refused', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${app.url}/`);
    const state = await page.evaluate(async ({ url, patience }) => {
      const source = new EventSource(url, { withCredentials: true });
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve('still pending'), patience);
        source.onopen = () => { clearTimeout(timer); resolve('opened'); };
        source.onerror = () => {
          if (source.readyState === EventSource.CLOSED) { clearTimeout(timer); resolve('closed'); }
        };
      });
    }, { url: `${broker.url}/stream/user.alice`, patience: PATIENCE_MS });
    assert.equal(state, 'closed');
  } finally {
    await context.close();
  }
});
