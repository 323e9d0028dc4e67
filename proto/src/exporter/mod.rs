//! OTLP/gRPC client and batching exporter. Not built yet.
