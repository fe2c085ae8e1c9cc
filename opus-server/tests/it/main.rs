//! In-process tests of opusd's gRPC API: `serve` on port 0 in a temp data dir, real tonic clients.

mod artifacts;
