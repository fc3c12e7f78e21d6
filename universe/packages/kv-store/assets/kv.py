#!/usr/bin/env python3
"""A small key-value store over HTTP, shipped as a package asset of the built-in universe.

GET/PUT/DELETE /v1/kv/<key>, GET /v1/kv (the keys), GET /health. Values are kept in memory
and written to a JSON file (write to a temporary file, then rename) after every change, so a
restarted instance in the same sandbox comes back with its data.
"""
import argparse
import http.server
import json
import os
import threading

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--max-value-bytes", type=int, default=1 << 20)
args = parser.parse_args()

lock = threading.Lock()
try:
    with open(args.data) as f:
        store = json.load(f)
except (OSError, ValueError):
    store = {}


def save():
    tmp = args.data + ".tmp"
    with open(tmp, "w") as f:
        json.dump(store, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, args.data)


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def key(self):
        if not self.path.startswith("/v1/kv/") or len(self.path) == len("/v1/kv/"):
            return None
        return self.path[len("/v1/kv/"):]

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, '{"healthy":true}')
        if self.path == "/v1/kv":
            with lock:
                return self.reply(200, json.dumps(sorted(store)))
        k = self.key()
        with lock:
            if k is None or k not in store:
                return self.reply(404, '{"message":"no such key"}')
            return self.reply(200, store[k], "application/octet-stream")

    def do_PUT(self):
        k = self.key()
        n = int(self.headers.get("Content-Length") or 0)
        if k is None:
            return self.reply(400, '{"message":"PUT /v1/kv/<key>"}')
        if n > args.max_value_bytes:
            return self.reply(413, '{"message":"value too large"}')
        value = self.rfile.read(n).decode("utf-8", "replace")
        with lock:
            store[k] = value
            save()
        self.reply(204, "")

    def do_DELETE(self):
        k = self.key()
        with lock:
            if k is None or k not in store:
                return self.reply(404, '{"message":"no such key"}')
            del store[k]
            save()
        self.reply(204, "")

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()
