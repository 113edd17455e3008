// Subscribes with the Node `eventsource` package, as a Node service would,
// and reports every event it dispatches: one JSON line per event,
// {"type", "id", "data"}, until an event whose data is "end" (a JSON string).
//   node tests/clients/node_eventsource.js STREAM_URL
// The library reconnects by itself (with Last-Event-ID) when the stream
// ends; the broker's notices are named events, listened to by name as a
// user who wants them would. Exit status 1 when "end" did not arrive
// within 60 s. The harness (tests/hostile/clients.rs) decides what the
// events should have been.
'use strict';

const { EventSource } = require('eventsource');

const [url] = process.argv.slice(2);
const source = new EventSource(url);
const timer = setTimeout(() => finish(1), 60000);

function finish(status) {
  clearTimeout(timer);
  source.close();
  process.exit(status);
}

function report(type) {
  return (event) => {
    console.log(JSON.stringify({ type, id: event.lastEventId, data: event.data }));
    if (event.data === '"end"') finish(0);
  };
}

source.onmessage = report('message');
source.addEventListener('broker.gap', report('broker.gap'));
source.addEventListener('broker.replay', report('broker.replay'));
source.onerror = () => {};
