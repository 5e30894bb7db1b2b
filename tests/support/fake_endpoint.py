"""A stand-in for `python -m model_server` that starts in milliseconds, for supervisor tests.

    python tests/support/fake_endpoint.py [--crash-file PATH] --host 127.0.0.1 --port 0

Binds the port (exit status 1 when it cannot), prints `ready http://HOST:PORT` like the real
endpoint, answers `GET /ping` with `{"status": "ok", "model": "fake", "context_tokens": 512}` and
`POST /invocations` (unstreamed) with the text `fake answer`.
While PATH exists, it kills itself with SIGSEGV before it is ready (a crash loop on demand).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Ping(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "model": "fake", "context_tokens": 512}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = {"text": "fake answer", "finish_reason": "stop", "model": "fake"}
        body = json.dumps({**answer, "usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-file", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.crash_file is not None and args.crash_file.exists():
        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        server = HTTPServer((args.host, args.port), Ping)
    except OSError as exc:
        print(f"fake endpoint: cannot bind: {exc}", file=sys.stderr)
        return 1
    print(f"ready http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
