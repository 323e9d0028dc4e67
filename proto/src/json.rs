//! OTLP/JSON to protobuf, converted once at the edge. Not built yet.
