"""Subscribes with one of the Python SSE clients people use, as its users do,
and reports every event it yields: one JSON line per event,
{"type", "id", "data"}, until an event whose data is "end" (a JSON string).

    python3 tests/clients/python_clients.py httpx-sse|sseclient-py STREAM_URL

Neither library reconnects by itself, so this script does what their users
write around them: when the stream ends or cannot be opened, wait the
server's `retry:` hint and reconnect with the last event id seen as
`Last-Event-ID`, the way an EventSource does. Exit status 1 when "end" did
not arrive within 60 s. The harness (tests/hostile/clients.rs) decides what
the events should have been.
"""
import json
import sys
import time

import httpx
import requests
from httpx_sse import connect_sse
import sseclient

CLIENT, URL = sys.argv[1], sys.argv[2]
END = '"end"'
DEADLINE = time.monotonic() + 60


# What an EventSource remembers between connections.
state = {"last_id": None, "retry_ms": 1000}


def seen(kind, event_id, data, retry):
    """Reports one event and remembers its id and the retry hint; whether
    it was the last one."""
    if retry:
        state["retry_ms"] = int(retry)
    if event_id:
        state["last_id"] = event_id
    print(json.dumps({"type": kind, "id": state["last_id"], "data": data}), flush=True)
    return data == END


def headers():
    last_id = state["last_id"]
    return {"Last-Event-ID": last_id} if last_id else {}


def with_httpx_sse():
    """Reads one connection; whether the last event came."""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as client:
        with connect_sse(client, "GET", URL, headers=headers()) as source:
            source.response.raise_for_status()
            for event in source.iter_sse():
                # httpx-sse carries the last event id over, as the spec says.
                if seen(event.event, event.id, event.data, event.retry):
                    return True
    return False


def with_sseclient():
    response = requests.get(
        URL, stream=True, headers={"Accept": "text/event-stream", **headers()}, timeout=(10, 30)
    )
    try:
        response.raise_for_status()
        for event in sseclient.SSEClient(response).events():
            # sseclient-py gives the id of this event only: `seen` keeps the last.
            if seen(event.event, event.id, event.data, event.retry):
                return True
    finally:
        response.close()
    return False


connect = {"httpx-sse": with_httpx_sse, "sseclient-py": with_sseclient}[CLIENT]
while time.monotonic() < DEADLINE:
    try:
        if connect():
            sys.exit(0)
    except (httpx.HTTPError, requests.RequestException) as err:
        # The server is unreachable or the connection broke: try again.
        print(f"reconnecting after {type(err).__name__}", file=sys.stderr, flush=True)
    time.sleep(state["retry_ms"] / 1000)
sys.exit(1)
