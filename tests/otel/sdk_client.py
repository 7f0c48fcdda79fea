"""A real OpenTelemetry SDK client for the OTLP ingest tests (tests/tests/otlp.rs).

Counts `traces_service_graph_request_total` and `traces_service_graph_request_failed_total`
with the Python SDK (Counter instruments, cumulative temporality) for the client/server
pairs of a plan, and exports them to the collector after every step with the SDK's own
OTLP/HTTP protobuf exporter (optionally gzip), or as OTLP/JSON (the SDK's protobuf
encoding turned into the proto3 JSON mapping OTLP/HTTP JSON uses). A step marked
"restart" shuts the meter provider down and starts a new one: a client restart (the
counters start again from 0 with a new start time). Prints the totals it counted, per
pair, as JSON on stdout.

Plan (JSON, argv[1]): {"endpoint": URL, "token": T or null, "encoding": "protobuf" |
"gzip" | "json", "resource": {...}, "steps": [{"restart": bool, "sleep": seconds,
"add": [[client, server, requests, failed], ...]}, ...]}
"""

import json
import sys
import time
import urllib.request

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource


class JsonExporter(MetricExporter):
    """OTLP/HTTP JSON: the SDK's OTLP protobuf message in the proto3 JSON mapping."""

    def __init__(self, url, headers):
        super().__init__(preferred_temporality={Counter: AggregationTemporality.CUMULATIVE})
        self.url = url
        self.headers = dict(headers, **{"Content-Type": "application/json"})

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        body = json_format.MessageToJson(
            encode_metrics(metrics_data), use_integers_for_enums=True
        ).encode()
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass


def provider(plan):
    url = plan["endpoint"]
    headers = {}
    if plan.get("token"):
        headers["Authorization"] = "Bearer " + plan["token"]
    enc = plan.get("encoding", "protobuf")
    if enc == "json":
        exporter = JsonExporter(url, headers)
    else:
        exporter = OTLPMetricExporter(
            endpoint=url,
            headers=headers,
            compression=Compression.Gzip if enc == "gzip" else Compression.NoCompression,
            preferred_temporality={Counter: AggregationTemporality.CUMULATIVE},
        )
    # Exports only when flushed (after every step).
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    mp = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create(plan.get("resource", {"service.name": "otel-collector"})),
    )
    meter = mp.get_meter("servicegraph")
    requests = meter.create_counter("traces_service_graph_request_total")
    failed = meter.create_counter("traces_service_graph_request_failed_total")
    return mp, requests, failed


def main():
    plan = json.loads(sys.argv[1])
    mp, requests, failed = provider(plan)
    totals = {}
    for step in plan["steps"]:
        if step.get("restart"):
            mp.shutdown()
            mp, requests, failed = provider(plan)
        for client, server, n, f in step.get("add", []):
            attrs = {"client": client, "server": server, "connection_type": ""}
            extra = step.get("attributes", {})
            attrs.update(extra)
            requests.add(n, attrs)
            if f:
                failed.add(f, attrs)
            t = totals.setdefault(client + " " + server, [0, 0])
            t[0] += n
            t[1] += f
        if not mp.force_flush(10_000):
            print("export failed", file=sys.stderr)
            sys.exit(1)
        time.sleep(step.get("sleep", 0))
    mp.shutdown()
    json.dump(totals, sys.stdout)
    print()


if __name__ == "__main__":
    main()
