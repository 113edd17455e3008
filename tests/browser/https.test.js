// HTTPS and HTTP/2 in a real browser: the real broker binary serves a
// certificate made for the test (openssl, self-signed for localhost;
// Chromium runs with --ignore-certificate-errors), and
// - one page opens 20 EventSources to the same origin: over HTTP/1.1 a
//   browser allows six connections per origin, so only six could be open;
//   over HTTP/2 all twenty share one connection, open, and receive events;
// - the debug console works over HTTPS (subscribe, publish, events arrive).
//   npm ci && npm run test:browser
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startBroker, stopBroker, launchBrowser, openConsole, uniqueChannel } = require('./helpers');

/** How long a page waits for a condition before the test fails (a guard against hanging). */
const PATIENCE_MS = 15000;

let broker;
let browser;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-https-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  broker = await startBroker('127.0.0.1:0', {
    https: true,
    env: {
      SSE_BROKER__SERVER__TLS__CERT_FILE: cert,
      SSE_BROKER__SERVER__TLS__KEY_FILE: key,
      SSE_BROKER__DEMO__ENABLED: 'false',
    },
  });
  browser = await launchBrowser(['--ignore-certificate-errors']);
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await stopBroker(broker, 'SIGTERM');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('twenty EventSources on one origin are all open over HTTP/2 and all receive events', async () => {
  const { page, problems, close } = await openConsole(browser, broker.url);
  try {
    const channel = uniqueChannel('wide');
    const result = await page.evaluate(async ({ channel, patience }) => {
      const waitFor = (check, what) => new Promise((resolve, reject) => {
        const started = Date.now();
        const poll = () => {
          if (check()) return resolve();
          if (Date.now() - started > patience) return reject(new Error(`timed out waiting for ${what}`));
          setTimeout(poll, 20);
        };
        poll();
      });
      const sources = [];
      const received = [];
      for (let i = 0; i < 20; i += 1) {
        const source = new EventSource(`/stream/${channel}`);
        received.push([]);
        source.onmessage = (event) => received[i].push(event.data);
        sources.push(source);
      }
      await waitFor(() => sources.every((s) => s.readyState === EventSource.OPEN), 'all 20 streams to open');
      const answers = [];
      for (const n of [1, 2, 3]) {
        const res = await fetch(`/publish/${channel}`, {
          method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: `event ${n}`,
        });
        answers.push(res.status);
      }
      await waitFor(() => received.every((r) => r.length === 3), 'every stream to receive 3 events');
      const protocol = performance.getEntriesByType('navigation')[0].nextHopProtocol;
      const open = sources.filter((s) => s.readyState === EventSource.OPEN).length;
      sources.forEach((s) => s.close());
      return { open, answers, received, protocol };
    }, { channel, patience: PATIENCE_MS });
    assert.equal(result.protocol, 'h2');
    assert.equal(result.open, 20);
    assert.deepEqual(result.answers, [202, 202, 202]);
    for (const events of result.received) {
      assert.deepEqual(events, ['event 1', 'event 2', 'event 3']);
    }
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test('the console subscribes, publishes and shows events over HTTPS', async () => {
  const { page, problems, close } = await openConsole(browser, broker.url);
  try {
    const channel = uniqueChannel('console');
    await page.getByTestId('channels-input').fill(channel);
    await page.getByTestId('connect').click();
    const connection = page.locator(`[data-testid="connection"][data-channels="${channel}"]`);
    await connection.getByTestId('connection-status').filter({ hasText: /^open$/ }).waitFor();
    const answer = await page.evaluate(async (channel) => {
      const res = await fetch(`/publish/${channel}`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"Message":"over https"}',
      });
      return res.json();
    }, channel);
    await page.locator(`[data-testid="log-row"][data-id="${answer.id}"]`).waitFor();
    await page.locator('#channels-updated', { hasText: 'updated' }).waitFor();
    assert.equal(await page.evaluate(() => window.location.protocol), 'https:');
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});
