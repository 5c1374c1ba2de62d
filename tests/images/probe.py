#!/usr/bin/env python3
"""A test image: an HTTP server that reports what its process sees.

GET /healthz        200 once PROBE_READY_AFTER seconds have passed (default 0)
GET /env            the environment as JSON
GET /pid            the process id
GET /file?path=P    the content of file P (404 when missing)
GET /write?path=P   tries to write P; 200 or 500 with the error
GET /fetch?url=U    the status and body of GET U, as this process gets it (502
                    with the error when it gets none)
Listens on every address of its Pod's network, port $PROBE_PORT. Exits 0 on SIGTERM, or with PROBE_EXIT_CODE
after PROBE_EXIT_AFTER seconds when those are set.
"""
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

STARTED = time.monotonic()
READY_AFTER = float(os.environ.get("PROBE_READY_AFTER", "0"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/healthz":
            ok = time.monotonic() - STARTED >= READY_AFTER
            return self.reply(200 if ok else 503, b"ok" if ok else b"starting")
        if url.path == "/env":
            return self.reply(200, json.dumps(dict(os.environ)).encode())
        if url.path == "/pid":
            return self.reply(200, str(os.getpid()).encode())
        if url.path == "/file":
            try:
                with open(query["path"][0], "rb") as f:
                    return self.reply(200, f.read())
            except OSError as e:
                return self.reply(404, str(e).encode())
        if url.path == "/write":
            try:
                with open(query["path"][0], "w") as f:
                    f.write("x")
                return self.reply(200, b"written")
            except OSError as e:
                return self.reply(500, str(e).encode())
        if url.path == "/fetch":
            try:
                with urllib.request.urlopen(query["url"][0], timeout=10) as r:
                    return self.reply(r.status, r.read())
            except urllib.error.HTTPError as e:
                return self.reply(e.code, e.read())
            except OSError as e:
                return self.reply(502, str(e).encode())
        self.reply(404, b"not found")

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("probe: " + fmt % args + "\n")


def main():
    # The Pod's own network namespace: every address there is the Pod's.
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PROBE_PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if "PROBE_EXIT_AFTER" in os.environ:
        def exit_later():
            time.sleep(float(os.environ["PROBE_EXIT_AFTER"]))
            os._exit(int(os.environ.get("PROBE_EXIT_CODE", "1")))
        threading.Thread(target=exit_later, daemon=True).start()
    print(f"probe listening on port {server.server_port} pid {os.getpid()}", flush=True)
    server.serve_forever()
    print("probe stopped on SIGTERM", flush=True)


if __name__ == "__main__":
    main()
