"""Emits traces and logs with the real OpenTelemetry Python SDK, for the
sampler's logs interop test (sampler/tests/sdk_logs.rs).

Two traces: one whose root span has an error (kept by an errors policy),
one without; log records inside each span (they carry the trace and span
IDs) and outside any span. Exported with BatchSpanProcessor and
BatchLogRecordProcessor over OTLP/gRPC or OTLP/HTTP protobuf, then flushed.
Prints, as JSON, the trace IDs and every record's body and trace ID.

With `--rounds N --pause S` it emits the pair N times, S seconds apart
(for the cluster's rescale test, tests/cluster_logs_scale.rs), every body
tagged with `--tag` and the round; `kept_traces` and `dropped_traces` list
every round's trace IDs.

    python scripts/otel_sdk_logs.py --endpoint http://127.0.0.1:4317 --protocol grpc
"""

import argparse
import json
import logging
import time

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode


def exporters(endpoint, protocol):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            OTLPLogExporter(endpoint=endpoint, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    resource = Resource.create({"service.name": "tailgate-logs-interop"})
    span_exporter, log_exporter = exporters(args.endpoint, args.protocol)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))

    log = logging.getLogger("tailgate.interop")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    tracer = tracer_provider.get_tracer("tailgate.interop", "1.2.3")

    records = []

    def emit(body, level=logging.INFO):
        ctx = trace.get_current_span().get_span_context()
        records.append(
            {
                "body": body,
                "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
            }
        )
        log.log(level, body)

    kept_traces, dropped_traces = [], []
    for round_ in range(args.rounds):
        p = args.protocol
        if args.rounds > 1 or args.tag:
            p = f"{args.protocol}{args.tag} r{round_}"
        emit(f"{p} starting, outside any span")
        with tracer.start_as_current_span("checkout") as root:
            kept = format(root.get_span_context().trace_id, "032x")
            emit(f"{p} kept: in the root")
            with tracer.start_as_current_span("pay"):
                emit(f"{p} kept: card declined", logging.ERROR)
            root.set_status(Status(StatusCode.ERROR, "declined"))
        with tracer.start_as_current_span("browse") as root:
            dropped = format(root.get_span_context().trace_id, "032x")
            emit(f"{p} dropped: in the root")
            with tracer.start_as_current_span("render"):
                emit(f"{p} dropped: rendered")
        emit(f"{p} done, outside any span")
        kept_traces.append(kept)
        dropped_traces.append(dropped)
        if args.pause and round_ + 1 < args.rounds:
            time.sleep(args.pause)

    tracer_provider.force_flush()
    logger_provider.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    print(
        json.dumps(
            {
                "kept": kept,
                "dropped": dropped,
                "kept_traces": kept_traces,
                "dropped_traces": dropped_traces,
                "records": records,
            }
        )
    )


if __name__ == "__main__":
    main()
