#!/usr/bin/env python3
"""Exports one trace with the real OpenTelemetry Python SDK to an OTLP endpoint.

Used by proto/tests/sdk_interop.rs to check that what an SDK sends arrives
intact. The trace: a server span "checkout" (the root) with SPANS-1 children,
attributes of every scalar type, an event, and one child with an error status.
The spans as the SDK recorded them are printed to stdout as one JSON document,
so the caller can compare them with what it received.

Exits 1 if any export did not succeed.

    otel_sdk_export.py --endpoint http://127.0.0.1:4317 --protocol grpc --spans 5
    otel_sdk_export.py --endpoint http://127.0.0.1:4318/v1/traces --protocol http \
        --compression gzip --processor simple
"""

import argparse
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode


class Recording(SpanExporter):
    """Delegates to the OTLP exporter and remembers every export result."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def otlp_exporter(protocol, endpoint, compression):
    if protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        kinds = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip}
        return OTLPSpanExporter(
            endpoint=endpoint, insecure=True, compression=kinds[compression], timeout=10
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    kinds = {"none": Compression.NoCompression, "gzip": Compression.Gzip}
    return OTLPSpanExporter(endpoint=endpoint, compression=kinds[compression], timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--spans", type=int, default=5, help="spans in the trace, at least 2")
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--processor", choices=["batch", "simple"], default="batch")
    args = parser.parse_args()
    if args.spans < 2:
        parser.error("--spans must be at least 2 (a root and an error child)")

    exporter = Recording(otlp_exporter(args.protocol, args.endpoint, args.compression))
    processor = (
        BatchSpanProcessor(exporter, max_export_batch_size=64)
        if args.processor == "batch"
        else SimpleSpanProcessor(exporter)
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": "tailgate-interop", "deployment": "test"})
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tailgate.interop", "1.2.3")

    finished = []
    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/checkout")
        root.set_attribute("items", 3)
        for i in range(args.spans - 1):
            with tracer.start_as_current_span(f"child-{i}") as child:
                child.set_attribute("index", i)
                child.set_attribute("ratio", 0.5)
                child.set_attribute("cached", i % 2 == 0)
                child.add_event("step", {"n": i})
                if i == 0:
                    child.set_status(Status(StatusCode.ERROR, "payment declined"))
            finished.append(child)
    finished.append(root)

    provider.force_flush()
    provider.shutdown()

    def hex_id(value, width):
        return format(value, f"0{width}x")

    out = []
    for span in finished:
        ctx = span.get_span_context()
        out.append(
            {
                "name": span.name,
                "trace_id": hex_id(ctx.trace_id, 32),
                "span_id": hex_id(ctx.span_id, 16),
                "parent_span_id": hex_id(span.parent.span_id, 16) if span.parent else "",
                # OTLP status codes: 0 unset, 1 ok, 2 error.
                "status_code": {
                    StatusCode.UNSET: 0,
                    StatusCode.OK: 1,
                    StatusCode.ERROR: 2,
                }[span.status.status_code],
                "status_message": span.status.description or "",
                "attributes": dict(span.attributes),
            }
        )
    json.dump({"spans": out}, sys.stdout)
    sys.stdout.write("\n")

    failed = [r for r in exporter.results if r != SpanExportResult.SUCCESS]
    if failed or not exporter.results:
        print(f"exports: {exporter.results}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
