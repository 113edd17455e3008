// Subscribes with the Node `eventsource` package, as a Node service would,
// and reports one JSON line per event, then a summary line.
//   node tests/clients/node_eventsource.js BASE_URL CHANNEL COUNT
// Exit status 1 when an event had empty data (a phantom) or COUNT events
// did not arrive within 30 s.
'use strict';

const { EventSource } = require('eventsource');

const [base, channel, countText] = process.argv.slice(2);
const count = Number(countText);
let got = 0;
let phantoms = 0;
const source = new EventSource(`${base}/stream/${channel}`);
const timer = setTimeout(() => finish(), 30000);

function finish() {
  clearTimeout(timer);
  source.close();
  console.log(JSON.stringify({ summary: { eventsource: { events: got, phantoms } } }));
  process.exit(got === count && phantoms === 0 ? 0 : 1);
}

source.onmessage = (event) => {
  console.log(JSON.stringify({ client: 'eventsource', id: event.lastEventId, data: event.data }));
  if (event.data === '') phantoms += 1;
  else {
    JSON.parse(event.data);
    got += 1;
  }
  if (got === count) finish();
};
source.onerror = () => {};
