"""A gRPC OTLP trace backend made with grpcio (gRPC's C core), for the exporter's
interop tests: tailgate's exporter must be understood by a gRPC server that is not
tonic, and understand its answers.

Prints "PORT <n>" once listening on 127.0.0.1, then one JSON line per request:
{"spans": N, "metadata": {...}} (a name given twice has its values joined by
commas). Answers with partial_success rejecting `x-reject` spans when that
metadata is given, with a 5 MiB error message when `x-huge` is, and aborts with
the status named by `x-abort` (a grpc.StatusCode name) when that is given. Stops after
--max-seconds, or when its standard input closes.
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


class Backend(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        spans = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        metadata = {}
        for k, v in context.invocation_metadata():
            if not k.endswith("-bin"):
                metadata[k] = f"{metadata[k]},{v}" if k in metadata else v
        print(json.dumps({"spans": spans, "metadata": metadata}), flush=True)
        if "x-abort" in metadata:
            context.abort(getattr(grpc.StatusCode, metadata["x-abort"]), "refused by the test backend")
        response = trace_service_pb2.ExportTraceServiceResponse()
        if "x-huge" in metadata:
            # An answer over the 4 MiB a client reads.
            response.partial_success.error_message = "x" * (5 * 1024 * 1024)
        if "x-reject" in metadata:
            response.partial_success.rejected_spans = int(metadata["x-reject"])
            response.partial_success.error_message = "rejected by the test backend"
        return response


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Backend(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    stdin_closed.wait(args.max_seconds)
    server.stop(0)


if __name__ == "__main__":
    main()
