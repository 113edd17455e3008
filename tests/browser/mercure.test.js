// Mercure hub scenarios in a real browser: the cases of the reference hub's
// browser conformance suite (an EventSource opened in the page, an update
// published from the page with fetch), in the legacy `topic` form and in the
// draft-08 `match` / `matchURLPattern` form, against the real broker binary
// with its development configuration.
//   npm ci && npm run test:browser
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startBroker, stopBroker, launchBrowser } = require('./helpers');

/** HS256 with Mercure's documented development key (the broker's dev default). */
const DEVELOPMENT_KEY = '!ChangeThisMercureHubJWTSecretKey!';

function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256' })}.${part(claims)}`;
  const signature = crypto.createHmac('sha256', DEVELOPMENT_KEY).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

const PUBLISHER = jwt({ mercure: { publish: ['*'], subscribe: ['*'] } });
/** How long a page waits for an update before calling it not received. */
const PATIENCE_MS = 2000;

let broker;
let browser;
let context;

before(async () => {
  broker = await startBroker();
  browser = await launchBrowser();
  context = await browser.newContext();
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await stopBroker(broker, 'SIGTERM');
});

const fresh = () => crypto.randomBytes(12).toString('hex');

/**
 * In a page of the hub's origin: subscribes with `selectors` (pairs of
 * query parameter and value), waits for the stream to open, publishes an
 * update on `topics` from the page, and reports whether the update arrived
 * (same id, same multi-line data) and how the publish was answered.
 */
async function publishAndWatch({ name, selectors, topics, isPrivate = false }) {
  const page = await context.newPage();
  try {
    await page.goto(`${broker.url}/`);
    return await page.evaluate(async ({ name, selectors, topics, isPrivate, token, patience }) => {
      const url = new URL('/.well-known/mercure', window.origin);
      for (const [key, value] of selectors) url.searchParams.append(key, value);
      const form = new URLSearchParams();
      for (const topic of topics) form.append('topic', topic);
      form.set('id', `id-${JSON.stringify(topics)}`);
      form.set('data', `data for\n\n        ${name}`);
      if (isPrivate) form.set('private', 'on');

      const source = new EventSource(url);
      let arrived;
      const received = new Promise((resolve) => { arrived = resolve; });
      source.onmessage = (e) => {
        if (e.lastEventId === form.get('id') && e.data === form.get('data')) arrived(true);
      };
      await new Promise((resolve, reject) => {
        source.onopen = resolve;
        setTimeout(() => reject(new Error(`the stream did not open: ${url}`)), patience);
      });
      const answer = await fetch('/.well-known/mercure', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
        body: form,
      });
      const body = await answer.text();
      const outcome = await Promise.race([
        received,
        new Promise((resolve) => setTimeout(resolve, patience, false)),
      ]);
      source.close();
      return {
        received: outcome,
        status: answer.status,
        contentType: answer.headers.get('content-type'),
        body,
        id: form.get('id'),
      };
    }, { name, selectors, topics, isPrivate, token: PUBLISHER, patience: PATIENCE_MS });
  } finally {
    await page.close();
  }
}

/** The conformance cases; `selectors` are given in both protocol forms. */
function cases() {
  const [raw, multi, several, uri, template] = Array.from({ length: 5 }, fresh);
  const uriTopic = `https://example.net/foo/${uri}`;
  const templateTopic = `https://example.net/foo/${template}`;
  const exact = (...values) => ({ legacy: values.map((v) => ['topic', v]), draft: values.map((v) => ['match', v]) });
  return [
    { name: 'raw string', topics: [raw], selectors: exact(raw), received: true },
    { name: 'multiple topics', topics: [fresh(), multi], selectors: exact(multi), received: true },
    { name: 'multiple topic selectors', topics: [several], selectors: exact('foo', several), received: true },
    { name: 'URI', topics: [uriTopic], selectors: exact(uriTopic), received: true },
    {
      name: 'URI template',
      topics: [templateTopic],
      selectors: {
        legacy: [['topic', 'https://example.net/foo/{random}']],
        draft: [['matchURLPattern', 'https://example.net/foo/:random']],
      },
      received: true,
    },
    { name: 'nonmatching raw string', topics: ['will-not-match}'], selectors: exact('another-name'), received: false },
    {
      name: 'nonmatching URI',
      topics: ['https://example.net/foo/will-not-match}'],
      selectors: exact('https://example.net/foo/another-name'),
      received: false,
    },
    {
      name: 'nonmatching URI template',
      topics: ['https://example.net/foo/will-not-match}'],
      selectors: {
        legacy: [['topic', 'https://example.net/bar/{var}']],
        draft: [['matchURLPattern', 'https://example.net/bar/:var']],
      },
      received: false,
    },
    { name: 'private raw string', topics: [raw], selectors: exact(raw), isPrivate: true, received: false },
    { name: 'private URI', topics: [uriTopic], selectors: exact(uriTopic), isPrivate: true, received: false },
    {
      name: 'private URI template',
      topics: [templateTopic],
      selectors: {
        legacy: [['topic', 'https://example.net/foo/{random}']],
        draft: [['matchURLPattern', 'https://example.net/foo/:random']],
      },
      isPrivate: true,
      received: false,
    },
  ];
}

for (const form of ['legacy', 'draft']) {
  for (const scenario of cases()) {
    test(`mercure (${form === 'legacy' ? 'topic' : 'match'}): ${scenario.name}`, async () => {
      const outcome = await publishAndWatch({
        name: scenario.name,
        selectors: scenario.selectors[form],
        topics: scenario.topics,
        isPrivate: scenario.isPrivate,
      });
      assert.equal(outcome.received, scenario.received, 'delivered to an anonymous browser subscriber');
      // Every publish is accepted; the answer is the update's own id.
      assert.equal(outcome.status, 200);
      assert.match(outcome.contentType, /^text\/plain(?:$|;)/);
      assert.equal(outcome.body, outcome.id);
    });
  }
}
