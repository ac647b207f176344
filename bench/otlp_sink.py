"""An OTLP/HTTP trace sink for the traced bench stage: accepts every
POST /v1/traces with an empty (valid) ExportTraceServiceResponse and counts
the exports and bytes into a JSON file, so the bench can show that spans
really left turnout. It decodes nothing, to take as little CPU as it can
from the gateway it measures.

    python -m bench.otlp_sink PORT COUNTS_FILE
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port, counts_file = int(sys.argv[1]), Path(sys.argv[2])
    counts = {"exports": 0, "bytes": 0}
    lock = threading.Lock()

    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            size = len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with lock:
                counts["exports"] += 1
                counts["bytes"] += size
                counts_file.write_text(json.dumps(counts))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()


if __name__ == "__main__":
    main()
