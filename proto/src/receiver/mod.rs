//! The OTLP receiver (gRPC and HTTP) shared by every role. Not built yet.
