//! Admin HTTP server: /metrics, /healthz, /readyz. Not built yet.
