"""A real OTLP/HTTP metrics receiver for the OTLP export test (tests/tests/otlp.rs): the
collector's exports are decoded with `opentelemetry-proto` (the OpenTelemetry project's
own generated messages), nothing of ours.

Prints `listening PORT` on stdout, then serves:
  POST /v1/metrics  an ExportMetricsServiceRequest (protobuf, gzip or not): every data
                    point of every Sum is kept as the latest of its series.
  GET /latest       JSON: {"exports": N, "content_types": [...], "resources": [...],
                    "series": [{"name", "temporality", "monotonic", "attributes",
                    "start", "time", "value"}]}
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

lock = threading.Lock()
state = {"exports": 0, "content_types": [], "resources": [], "series": {}}


def value(kv):
    v = kv.value
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportMetricsServiceRequest()
        req.ParseFromString(body)
        with lock:
            state["exports"] += 1
            state["content_types"].append(self.headers.get("Content-Type"))
            state["auth"] = self.headers.get("Authorization")
            for rm in req.resource_metrics:
                res = {kv.key: value(kv) for kv in rm.resource.attributes}
                if res not in state["resources"]:
                    state["resources"].append(res)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        points = getattr(m, kind).data_points
                        for p in points:
                            attrs = {kv.key: value(kv) for kv in p.attributes}
                            key = m.name + json.dumps(attrs, sort_keys=True)
                            state["series"][key] = {
                                "name": m.name,
                                "kind": kind,
                                "temporality": m.sum.aggregation_temporality if kind == "sum" else None,
                                "monotonic": m.sum.is_monotonic if kind == "sum" else None,
                                "attributes": attrs,
                                "start": p.start_time_unix_nano,
                                "time": p.time_unix_nano,
                                "value": p.as_int if p.WhichOneof("value") == "as_int" else p.as_double,
                            }
        out = ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        with lock:
            out = dict(state, series=list(state["series"].values()))
            body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("listening", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
