#!/usr/bin/env python3
"""A webhook receiver for the occupancy webhook tests (docs/webhooks.md):
it verifies every delivery with the Standard Webhooks reference library
(`pip install standardwebhooks`), as an application would, and records
what it accepted.

Routes:

- POST /hook        a delivery: verified with the secret given on the
                    command line (webhook-id, webhook-timestamp,
                    webhook-signature); a bad signature answers 401 and is
                    counted as rejected; while told to fail, answers the
                    failure status (500 unless set) and counts the attempt;
                    else records it and answers 204
- POST /control     the test's knobs, JSON: {"fail": n (fail the next n
                    deliveries), "status": the failure's status}
- GET  /deliveries  {"accepted": [{"id", "body"}...], "attempts": [ids of
                    every verified delivery, failed ones included, in
                    order], "rejected": n}

Prints `listening <port>` once it serves (port 0 picks a free one).
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

STATE = {"fail": 0, "status": 500, "accepted": [], "attempts": [], "rejected": 0}
LOCK = threading.Lock()
WEBHOOK = None


class Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length)

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/deliveries":
            return self.answer(404)
        with LOCK:
            snapshot = {k: STATE[k] for k in ("accepted", "attempts", "rejected")}
            self.answer(200, json.dumps(snapshot).encode())

    def do_POST(self):
        body = self.body()
        if self.path == "/control":
            knobs = json.loads(body or b"{}")
            with LOCK:
                STATE["fail"] = int(knobs.get("fail", STATE["fail"]))
                STATE["status"] = int(knobs.get("status", STATE["status"]))
            return self.answer(204)
        if self.path != "/hook":
            return self.answer(404)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            payload = WEBHOOK.verify(body, headers)
        except Exception:  # the library raises WebhookVerificationError
            with LOCK:
                STATE["rejected"] += 1
            return self.answer(401)
        with LOCK:
            STATE["attempts"].append(headers["webhook-id"])
            if STATE["fail"] > 0:
                STATE["fail"] -= 1
                return self.answer(STATE["status"])
            STATE["accepted"].append({"id": headers["webhook-id"], "body": payload})
        self.answer(204)


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main():
    global WEBHOOK
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True, help="whsec_<base64>")
    parser.add_argument("--fail", type=int, default=0, help="fail the first n deliveries")
    args = parser.parse_args()
    WEBHOOK = Webhook(args.secret)
    STATE["fail"] = args.fail
    server = Server(("127.0.0.1", args.port), Receiver)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
