"""A test backend that behaves like a well-written service: on SIGTERM it keeps serving for
a short drain window, then exits. Usage: drain_server.py PORT [DRAIN_SECONDS].

The body names the version ($VERSION) and the task ($MESOS_TASK_ID), and echoes the
X-Forwarded-For header so tests can tell HTTP from TCP proxying."""
import http.server
import os
import signal
import sys
import threading
import time


STARTED = time.time()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade"):
            # Enough of an upgrade for a proxy test: 101, then echo raw bytes both ways.
            self.send_response(101)
            self.send_header("Upgrade", self.headers.get("Upgrade"))
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(4096)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        if self.path == "/ready":
            # Not ready until READY_AFTER seconds after start (a warming cache, say).
            ready = time.time() - STARTED >= float(os.environ.get("READY_AFTER", "0"))
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = "{} {} xff={}\n".format(
            os.environ.get("VERSION", "v0"),
            os.environ.get("MESOS_TASK_ID", "?"),
            self.headers.get("X-Forwarded-For", "-"),
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = "posted {} bytes sum {}\n".format(len(data), sum(data) % 65521).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1])
    drain = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True

    def on_term(*_):
        threading.Thread(target=lambda: (time.sleep(drain), os._exit(0)), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    srv.serve_forever()


main()
