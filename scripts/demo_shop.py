"""The demo's shop: one small HTTP service run as several instances on loopback, each
exporting real Prometheus metrics from the requests it serves (`http_requests_total` by
`code`, an `http_request_duration_seconds` histogram), and each loaded at 10 requests a
second by a client of its own. `POST /fault?errors=30` makes an instance fail that percent
of its requests from then on (a bad release), `errors=0` heals it.

usage: demo_shop.py PORT [PORT ...]     (one instance per port; runs until killed)
"""

import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUESTS_PER_SECOND = 10


class Instance:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors = 0  # percent of requests answered 500
        self.served = 0
        self.by_code: dict[str, int] = {}
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.total = 0.0

    def work(self) -> int:
        started = time.monotonic()
        time.sleep(0.004)  # the shop's own work
        with self.lock:
            n = self.served
            self.served += 1
            # `errors` of every 100 requests fail, spread evenly.
            failed = (n + 1) * self.errors // 100 > n * self.errors // 100
            code = 500 if failed else 200
            self.by_code[str(code)] = self.by_code.get(str(code), 0) + 1
            took = time.monotonic() - started
            self.count += 1
            self.total += took
            for i, bound in enumerate(BUCKETS):
                if took <= bound:
                    self.buckets[i] += 1
        return code

    def metrics(self) -> str:
        with self.lock:
            lines = [
                "# HELP http_requests_total Requests served, by code",
                "# TYPE http_requests_total counter",
            ]
            lines += [f'http_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.by_code.items())]
            lines += [
                "# HELP http_request_duration_seconds Time to answer",
                "# TYPE http_request_duration_seconds histogram",
            ]
            lines += [
                f'http_request_duration_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(BUCKETS, self.buckets)
            ]
            lines += [
                f'http_request_duration_seconds_bucket{{le="+Inf"}} {self.count}',
                f"http_request_duration_seconds_sum {self.total}",
                f"http_request_duration_seconds_count {self.count}",
            ]
        return "\n".join(lines) + "\n"


def serve(port: int) -> None:
    instance = Instance()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = urlparse(self.path).path
            if path == "/metrics":
                self.answer(200, instance.metrics(), "text/plain; version=0.0.4")
            elif path == "/work":
                code = instance.work()
                self.answer(code, "ok\n" if code == 200 else "failed\n", "text/plain")
            else:
                self.answer(404, "no such path\n", "text/plain")

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            url = urlparse(self.path)
            errors = parse_qs(url.query).get("errors", [""])[0]
            if url.path != "/fault" or not errors.isdigit() or int(errors) > 100:
                self.answer(400, "POST /fault?errors=<0..100>\n", "text/plain")
                return
            with instance.lock:
                instance.errors = int(errors)
            self.answer(200, f"errors {errors} %\n", "text/plain")

        def answer(self, code: int, body: str, kind: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=load, args=(port,), daemon=True).start()


def load(port: int) -> None:
    """A client of the instance: REQUESTS_PER_SECOND requests a second, forever."""
    interval = 1 / REQUESTS_PER_SECOND
    due = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=5).read()
        except OSError:
            pass  # a 500 is an answer too; the server counted it
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))


def main() -> None:
    ports = [int(p) for p in sys.argv[1:]]
    if not ports:
        sys.exit(__doc__)
    for port in ports:
        serve(port)
    threading.Event().wait()


if __name__ == "__main__":
    main()
