// The Mercure hub in a real browser: every case of the reference hub's
// conformance suites (dunglas/mercure `conformance-tests/`, the 1.0 suite
// and the 0.x one), in our own words, against the real broker binary in
// Chromium. A page of the hub's origin opens an EventSource, publishes from
// the page with fetch and the suites' publisher token, and checks whether
// the update arrives (same id, same multi-line data) and how the publish
// was answered (200, text/plain, the id).
//
// Three runs, as the suites are run against the hub:
// - the 1.0 cases in the default mode, the resource identifier pinned to
//   the suite token's audience (https://localhost/.well-known/mercure);
// - the 1.0 cases again in compatibility mode (protocol_version_compatibility = 8);
// - the 0.x cases (topic=, URI templates, the `mercure` claim) in
//   compatibility mode.
//   npm ci && npm run test:browser
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startBroker, stopBroker, launchBrowser } = require('./helpers');

/** Mercure's documented development key (the broker's development issuer's). */
const DEVELOPMENT_KEY = '!ChangeThisMercureHubJWTSecretKey!';
/** The audience of the 1.0 suite's token. */
const SUITE_AUDIENCE = 'https://localhost/.well-known/mercure';
const DETAIL = 'https://mercure.rocks/authorization-detail';
/** How long a page waits for an update before calling it not received. */
const PATIENCE_MS = 2000;

function jwt(header, claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part(header)}.${part(claims)}`;
  const signature = crypto.createHmac('sha256', DEVELOPMENT_KEY).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** The 1.0 suite's publisher: an RFC 9068 access token of the issuer https://localhost. */
const MODERN_PUBLISHER = jwt({ alg: 'HS256', typ: 'at+jwt' }, {
  aud: SUITE_AUDIENCE,
  iss: 'https://localhost',
  authorization_details: [
    { type: DETAIL, actions: ['publish'], topics: [{ match: '*' }] },
    { type: DETAIL, actions: ['subscribe'], topics: [{ match: '*' }] },
  ],
  exp: 4102444800,
});
/** The 0.x suite's publisher: the `mercure` claim, no typ, iss, aud or exp. */
const LEGACY_PUBLISHER = jwt({ alg: 'HS256' }, { mercure: { publish: ['*'], subscribe: ['*'] } });

const fresh = () => crypto.randomBytes(20).toString('hex');

/**
 * In a page of the hub's origin: subscribes with `selectors` ([parameter,
 * value] pairs), waits for the stream to open, publishes an update on
 * `topics` with `token`, and reports whether it arrived and the answer.
 */
async function publishAndWatch(context, baseUrl, { name, selectors, topics, isPrivate = false, token }) {
  const page = await context.newPage();
  try {
    await page.goto(`${baseUrl}/`);
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
      return { received: outcome, status: answer.status, contentType: answer.headers.get('content-type'), body, id: form.get('id') };
    }, { name, selectors, topics, isPrivate, token, patience: PATIENCE_MS });
  } finally {
    await page.close();
  }
}

/** The 1.0 suite's cases: exact matchers with `match`, patterns with `match_urlpattern`. */
function modernCases() {
  const r = Array.from({ length: 6 }, fresh);
  const exact = (...values) => values.map((v) => ['match', v]);
  const pattern = (value) => [['match_urlpattern', value]];
  return [
    { name: 'an exact raw string', topics: [r[0]], selectors: exact(r[0]), received: true },
    { name: 'one of several matchers', topics: [r[2]], selectors: exact('foo', r[2]), received: true },
    { name: 'an exact URI', topics: [`https://example.net/foo/${r[3]}`], selectors: exact(`https://example.net/foo/${r[3]}`), received: true },
    { name: 'a URL pattern', topics: [`https://example.net/foo/${r[4]}`], selectors: pattern('https://example.net/foo/:random'), received: true },
    { name: 'a raw string that does not match', topics: ['will-not-match'], selectors: exact('another-name'), received: false },
    { name: 'a URI that does not match', topics: ['https://example.net/foo/will-not-match'], selectors: exact('https://example.net/foo/another-name'), received: false },
    { name: 'a URL pattern that does not match', topics: ['https://example.net/foo/will-not-match'], selectors: pattern('https://example.net/bar/:var'), received: false },
    { name: 'a private update on a raw string', topics: [r[0]], selectors: exact(r[0]), isPrivate: true, received: false },
    { name: 'a private update on a URI', topics: [`https://example.net/foo/${r[3]}`], selectors: exact(`https://example.net/foo/${r[3]}`), isPrivate: true, received: false },
    { name: 'a private update through a URL pattern', topics: [`https://example.net/foo/${r[4]}`], selectors: pattern('https://example.net/foo/:random'), isPrivate: true, received: false },
  ];
}

/** The 0.x suite's cases: every selector a `topic`, patterns as URI templates. */
function legacyCases() {
  const r = Array.from({ length: 6 }, fresh);
  const topics = (...values) => values.map((v) => ['topic', v]);
  return [
    { name: 'an exact raw string', topics: [r[0]], selectors: topics(r[0]), received: true },
    { name: 'one of several topics of an update', topics: [fresh(), r[1]], selectors: topics(r[1]), received: true },
    { name: 'one of several selectors', topics: [r[2]], selectors: topics('foo', r[2]), received: true },
    { name: 'an exact URI', topics: [`https://example.net/foo/${r[3]}`], selectors: topics(`https://example.net/foo/${r[3]}`), received: true },
    { name: 'a URI template', topics: [`https://example.net/foo/${r[4]}`], selectors: topics('https://example.net/foo/{random}'), received: true },
    { name: 'a raw string that does not match', topics: ['will-not-match}'], selectors: topics('another-name'), received: false },
    { name: 'a URI that does not match', topics: ['https://example.net/foo/will-not-match}'], selectors: topics('https://example.net/foo/another-name'), received: false },
    { name: 'a URI template that does not match', topics: ['https://example.net/foo/will-not-match}'], selectors: topics('https://example.net/bar/{var}'), received: false },
    { name: 'a private update on a raw string', topics: [r[0]], selectors: topics(r[0]), isPrivate: true, received: false },
    { name: 'a private update on a URI', topics: [`https://example.net/foo/${r[3]}`], selectors: topics(`https://example.net/foo/${r[3]}`), isPrivate: true, received: false },
    { name: 'a private update through a URI template', topics: [`https://example.net/foo/${r[4]}`], selectors: topics('https://example.net/foo/{random}'), isPrivate: true, received: false },
  ];
}

const RUNS = [
  {
    title: 'Mercure 1.0 (default mode, pinned resource identifier)',
    env: { SSE_BROKER__MERCURE__RESOURCE_IDENTIFIER: SUITE_AUDIENCE },
    token: MODERN_PUBLISHER,
    cases: modernCases,
  },
  {
    title: 'Mercure 1.0 clients in compatibility mode 8',
    env: { SSE_BROKER__MERCURE__PROTOCOL_VERSION_COMPATIBILITY: '8' },
    token: MODERN_PUBLISHER,
    cases: modernCases,
  },
  {
    title: 'Mercure 0.x clients in compatibility mode 8',
    env: { SSE_BROKER__MERCURE__PROTOCOL_VERSION_COMPATIBILITY: '8' },
    token: LEGACY_PUBLISHER,
    cases: legacyCases,
  },
];

for (const run of RUNS) {
  describe(run.title, () => {
    let broker;
    let browser;
    let context;
    before(async () => {
      broker = await startBroker('127.0.0.1:0', { env: run.env });
      browser = await launchBrowser();
      context = await browser.newContext();
    });
    after(async () => {
      if (browser) await browser.close();
      if (broker) await stopBroker(broker, 'SIGTERM');
    });
    for (const scenario of run.cases()) {
      test(`${scenario.received ? 'delivers' : 'does not deliver'} ${scenario.name}`, async () => {
        const outcome = await publishAndWatch(context, broker.url, { ...scenario, token: run.token });
        assert.equal(outcome.received, scenario.received, 'delivered to an anonymous browser subscriber');
        // Every publish is accepted; the answer is the update's own id.
        assert.equal(outcome.status, 200, outcome.body);
        assert.match(outcome.contentType, /^text\/plain(?:$|;)/);
        assert.equal(outcome.body, outcome.id);
      });
    }
  });
}
