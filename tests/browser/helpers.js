// Helpers for the browser end-to-end test: start/stop the broker, launch
// Chromium through playwright-core, open the console page and collect errors.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const BROKER_BIN = path.resolve(ROOT, process.env.SSE_BROKER_BIN || 'target/release/sse-broker');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STARTUP_TIMEOUT_MS = 20000;
const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Starts the broker on `bind` (default an ephemeral port) and resolves when it logs its address.
 * `env` adds environment variables (configuration keys); with `https` the broker's URL is
 * `https://localhost:<port>` (its certificate must name localhost).
 */
function startBroker(bind = '127.0.0.1:0', { env = {}, https = false } = {}) {
  if (!fs.existsSync(BROKER_BIN)) {
    throw new Error(`broker binary not found at ${BROKER_BIN}: build it (cargo build --release) or set SSE_BROKER_BIN`);
  }
  const child = spawn(BROKER_BIN, ['--bind', bind], {
    cwd: ROOT,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const broker = { child, log: '', port: 0, url: '' };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('broker did not log "listening addr=" in time')), STARTUP_TIMEOUT_MS);
    function fail(err) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${err.message}\n--- broker output ---\n${broker.log}`));
    }
    function onData(chunk) {
      broker.log += chunk.toString('utf8').replace(ANSI, '');
      const m = /listening\s+addr=\[?([0-9.:a-f]+?)\]?:(\d+)/.exec(broker.log);
      if (m && !broker.port) {
        clearTimeout(timer);
        broker.port = Number(m[2]);
        broker.url = https ? `https://localhost:${broker.port}` : `http://127.0.0.1:${broker.port}`;
        resolve(broker);
      }
    }
    child.stderr.on('data', onData);
    child.stdout.on('data', onData);
    child.once('error', fail);
    child.once('exit', (code, signal) => {
      if (!broker.port) fail(new Error(`broker exited early (code ${code}, signal ${signal})`));
    });
  });
}

/** Stops the broker and waits for the process to be gone. SIGKILL simulates a crash. */
function stopBroker(broker, signal = 'SIGKILL') {
  const { child } = broker;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill(signal);
  });
}

/** Launches headless Chromium; `extraArgs` adds flags (e.g. `--ignore-certificate-errors`). */
function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * Opens the console page in a fresh browser context (by default idle:
 * `/?channels=`; pass `query` '' to open `/` as a newcomer does). Every console error or
 * warning and every uncaught page error is collected in `problems`.
 */
async function openConsole(browser, baseUrl, viewport = { width: 1280, height: 800 }, query = '?channels=') {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      problems.push({ at: Date.now(), kind: `console.${msg.type()}`, text: msg.text() });
    }
  });
  page.on('pageerror', (err) => problems.push({ at: Date.now(), kind: 'pageerror', text: String(err.stack || err) }));
  // Scenarios start idle (`?channels=`) unless they ask for the page as a
  // newcomer opens it (query '').
  await page.goto(`${baseUrl}/${query}`);
  await page.getByTestId('tab-id').filter({ hasText: /^tab-\d+-/ }).waitFor();
  return { page, problems, close: () => context.close() };
}

/** POSTs an event from outside the page; resolves with the broker's JSON answer. */
async function publish(baseUrl, channel, body, type) {
  const query = type ? `?event=${encodeURIComponent(type)}` : '';
  const isText = typeof body === 'string';
  const res = await fetch(`${baseUrl}/publish/${encodeURIComponent(channel)}${query}`, {
    method: 'POST',
    headers: { 'Content-Type': isText ? 'text/plain' : 'application/json' },
    body: isText ? body : JSON.stringify(body),
  });
  const answer = await res.json();
  if (res.status !== 202) throw new Error(`publish answered ${res.status}: ${JSON.stringify(answer)}`);
  return answer;
}

function uniqueChannel(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
}

module.exports = {
  ROOT, startBroker, stopBroker, launchBrowser, openConsole, publish, uniqueChannel,
};
