// Subscribes with Chromium's own EventSource (headless, through
// playwright-core) and reports every event it dispatches: one JSON line per
// event, {"type", "id", "data"}, until an event whose data is "end" (a JSON
// string).
//   node tests/clients/chromium_eventsource.js STREAM_URL
// The page is a same-origin page of the broker (/healthz); the browser
// reconnects by itself (with Last-Event-ID) when the stream ends. Exit
// status 1 when "end" did not arrive within 60 s. The harness
// (tests/hostile/clients.rs) decides what the events should have been.
'use strict';

const { launchBrowser } = require('../browser/helpers');

const [url] = process.argv.slice(2);

async function main() {
  const browser = await launchBrowser();
  const timer = setTimeout(() => {
    console.error('no "end" event within 60 s');
    process.exit(1);
  }, 60000);
  try {
    const page = await browser.newPage();
    let ended;
    const end = new Promise((resolve) => { ended = resolve; });
    await page.exposeFunction('report', (line) => {
      console.log(line);
      if (JSON.parse(line).data === '"end"') ended();
    });
    await page.goto(`${new URL(url).origin}/healthz`);
    await page.evaluate((streamUrl) => {
      const source = new EventSource(streamUrl);
      const report = (type) => (event) => {
        window.report(JSON.stringify({ type, id: event.lastEventId, data: event.data }));
      };
      source.onmessage = report('message');
      source.addEventListener('broker.gap', report('broker.gap'));
      source.addEventListener('broker.replay', report('broker.replay'));
    }, url);
    await end;
  } finally {
    clearTimeout(timer);
    await browser.close();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
