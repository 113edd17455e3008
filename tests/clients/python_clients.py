"""Subscribes with the Python SSE clients people use, as they use them, and
reports what each yielded: one JSON line per event, then a summary line.

    python3 tests/clients/python_clients.py BASE_URL CHANNEL COUNT

Each client reads until it got COUNT events with data; an event with empty
data (what httpx-sse yields for a block without data, e.g. a comment and a
blank line) is reported as a phantom, and the exit status is 1 when any
client saw one, or did not get its COUNT events in time.
"""
import json
import sys
import threading

import httpx
from httpx_sse import connect_sse
import requests
import sseclient

BASE, CHANNEL, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])
URL = f"{BASE}/stream/{CHANNEL}"
results = {}
lock = threading.Lock()


def report(client, event_id, data):
    with lock:
        print(json.dumps({"client": client, "id": event_id, "data": data}), flush=True)


def with_httpx_sse():
    got, phantoms = 0, 0
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client:
        with connect_sse(client, "GET", URL) as source:
            for event in source.iter_sse():
                report("httpx-sse", event.id, event.data)
                if event.data == "":
                    phantoms += 1
                else:
                    json.loads(event.data)  # what a consumer does with it
                    got += 1
                if got == COUNT:
                    break
    results["httpx-sse"] = (got, phantoms)


def with_sseclient():
    got, phantoms = 0, 0
    response = requests.get(URL, stream=True, headers={"Accept": "text/event-stream"}, timeout=30)
    for event in sseclient.SSEClient(response).events():
        report("sseclient-py", event.id, event.data)
        if event.data == "":
            phantoms += 1
        else:
            json.loads(event.data)
            got += 1
        if got == COUNT:
            break
    response.close()
    results["sseclient-py"] = (got, phantoms)


threads = [threading.Thread(target=f, daemon=True) for f in (with_httpx_sse, with_sseclient)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=30)
ok = all(results.get(name, (0, 1)) == (COUNT, 0) for name in ("httpx-sse", "sseclient-py"))
print(json.dumps({"summary": {k: {"events": v[0], "phantoms": v[1]} for k, v in results.items()}}), flush=True)
sys.exit(0 if ok else 1)
