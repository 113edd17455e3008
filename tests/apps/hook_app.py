#!/usr/bin/env python3
"""A small web application with ordinary cookie sessions, acting as the
broker's authorization hook (docs/hooks.md) in the tests.

Standard library only. Routes:

- GET  /            the login form, or (logged in) a page that opens an
                    EventSource on the broker with withCredentials
- POST /login       form user=…&password=… (password "secret"): sets the
                    session cookie `app_session` and redirects to /
- POST /logout      ends the session and asks the broker to end the user's
                    streams (POST /users/{user}/disconnect with the backend
                    token)
- POST /hook        the broker's hook: 200 with the user and its channels
                    for a live session, 401 otherwise; a publish question
                    ("action": "publish", hooks.publish_url) is allowed
                    (204) when every channel or topic asked is one of the
                    session user's channels, else 403
- POST /control     the test's knobs, JSON: {"mode": "ok" | "open" |
                    "slow" | "garbage" | "error", "delay": seconds,
                    "cacheFor": …, "broker": URL, "token": backend token}
                    ("open" allows everyone every channel asked: the
                    benchmark's mode, bench/hooks.sh)
- GET  /calls       what the hook was asked: {"count": n, "last": {...}}

Prints `listening <port>` once it serves (port 0 picks a free one).
"""

import argparse
import fnmatch
import json
import secrets
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Each user may read these channels (patterns in the broker's grammar).
CHANNELS = {
    "alice": ["news", "user.alice", "room.*"],
    "bob": ["news", "user.bob", "room.*"],
}
PASSWORD = "secret"

STATE = {
    "sessions": {},  # session id -> user
    "mode": "ok",
    "delay": 0.0,
    "cache_for": None,
    "broker": None,
    "token": None,
    "calls": 0,
    "last": None,
}
LOCK = threading.Lock()

PAGE = """<!doctype html><meta charset="utf-8"><title>app</title>
<p id="who">{user}</p>
<form method="post" action="/logout"><button>Log out</button></form>
<script>
  window.events = [];
  window.errors = 0;
  const source = new EventSource({url!r}, {{ withCredentials: true }});
  source.onopen = () => window.opened = true;
  source.onmessage = (e) => window.events.push(e.data);
  source.addEventListener("broker.revoked", (e) => {{ window.revoked = e.data; }});
  source.onerror = () => {{ window.errors += 1; window.readyState = source.readyState; }};
</script>
"""

LOGIN = """<!doctype html><meta charset="utf-8"><title>login</title>
<form method="post" action="/login">
  <input name="user"> <input name="password" type="password">
  <button>Log in</button>
</form>
"""


def session_user(cookie_header):
    """The user of the `app_session` cookie, if its session is live."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "app_session":
            with LOCK:
                return STATE["sessions"].get(value)
    return None


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                calls = {"count": STATE["calls"], "last": STATE["last"]}
            self.answer(200, json.dumps(calls).encode())
            return
        user = session_user(self.headers.get("cookie"))
        query = urllib.parse.urlparse(self.path).query
        channel = urllib.parse.parse_qs(query).get("channel", ["user.alice"])[0]
        if user is None:
            self.answer(200, LOGIN.encode(), "text/html")
            return
        url = f"{STATE['broker']}/stream/{channel}"
        self.answer(200, PAGE.format(user=user, url=url).encode(), "text/html")

    def do_POST(self):
        body = self.body()
        if self.path == "/hook":
            self.hook(body)
        elif self.path == "/login":
            form = urllib.parse.parse_qs(body.decode())
            user = form.get("user", [""])[0]
            if user not in CHANNELS or form.get("password", [""])[0] != PASSWORD:
                self.answer(403, b"wrong user or password", "text/plain")
                return
            session = secrets.token_urlsafe(16)
            with LOCK:
                STATE["sessions"][session] = user
            self.answer(
                303,
                headers=[
                    ("location", "/"),
                    ("set-cookie", f"app_session={session}; Path=/; HttpOnly; SameSite=Lax"),
                ],
            )
        elif self.path == "/logout":
            self.logout()
        elif self.path == "/control":
            knobs = json.loads(body or b"{}")
            with LOCK:
                for key, name in [
                    ("mode", "mode"),
                    ("delay", "delay"),
                    ("cacheFor", "cache_for"),
                    ("broker", "broker"),
                    ("token", "token"),
                ]:
                    if key in knobs:
                        STATE[name] = knobs[key]
            self.answer(204)
        else:
            self.answer(404)

    def hook(self, body):
        with LOCK:
            STATE["calls"] += 1
            STATE["last"] = {
                "body": json.loads(body or b"null"),
                "cookie": self.headers.get("cookie"),
                "origin": self.headers.get("origin"),
                "authorization": self.headers.get("authorization"),
                "other": self.headers.get("x-not-forwarded"),
            }
            mode, delay, cache_for = STATE["mode"], STATE["delay"], STATE["cache_for"]
        if mode == "slow":
            time.sleep(delay)
        if mode == "garbage":
            self.answer(200, b"<html>not an answer</html>", "text/html")
            return
        if mode == "error":
            self.answer(500, b"boom", "text/plain")
            return
        if mode == "open":
            allow = {} if cache_for is None else {"cacheFor": cache_for}
            self.answer(200, json.dumps(allow).encode())
            return
        user = session_user(self.headers.get("cookie"))
        if user is None:
            self.answer(401, b"")
            return
        question = json.loads(body or b"null") or {}
        if question.get("action") == "publish":
            asked = question.get("channels") or question.get("topics") or []
            mine = all(any(fnmatch.fnmatchcase(a, p) for p in CHANNELS[user]) for a in asked)
            self.answer(204 if mine else 403)
            return
        allow = {"user": user, "info": {"name": user.title()}, "channels": CHANNELS[user]}
        if cache_for is not None:
            allow["cacheFor"] = cache_for
        self.answer(200, json.dumps(allow).encode())

    def logout(self):
        cookie = self.headers.get("cookie") or ""
        user = None
        with LOCK:
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == "app_session":
                    user = STATE["sessions"].pop(value, None)
            broker, token = STATE["broker"], STATE["token"]
        streams = None
        if user and broker:
            request = urllib.request.Request(
                f"{broker}/users/{urllib.parse.quote(user)}/disconnect", method="POST"
            )
            if token:
                request.add_header("authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, timeout=10) as response:
                streams = json.loads(response.read())["streams"]
        self.answer(200, json.dumps({"user": user, "streams": streams}).encode())


class Server(ThreadingHTTPServer):
    # The broker keeps up to hooks.max_concurrency connections to the hook.
    request_queue_size = 128
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok", help="the initial mode (see /control)")
    parser.add_argument("--cache-for", default=None, help="the initial cacheFor")
    args = parser.parse_args()
    STATE["mode"], STATE["cache_for"] = args.mode, args.cache_for
    server = Server(("127.0.0.1", args.port), App)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
