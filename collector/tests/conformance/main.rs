//! **One storage conformance suite, every backend**: each case below runs against SQLite
//! (always) and PostgreSQL (when `WHOUSES_TEST_POSTGRES_URL` is set), each on a fresh
//! database, through the `Store` trait only — the way quickwit runs one metastore suite
//! over every backend. Both must give identical answers.
//!
//! * [`model`] — random report streams (duplicates, out of order) vs a naive model, every
//!   `since` hour boundary;
//! * [`rollup`] — hours folded into days, retention (incl. the `seen` → seq floor fold and
//!   a mid-day cutoff);
//! * [`coverage`] — observation intervals merged, `coverage()` and `observed_since()`,
//!   and `check` verdicts built on them;
//! * [`ingest`] — instance binding (409), saturating counters, the same batch from 8
//!   tasks at once (two "replicas" on PostgreSQL), migrations applied once;
//! * [`inbound`] — the callee's view (inbound calls per caller address and hour) and the
//!   address book (claims merged per instance, kept as history), both backends;
//! * [`plans`] — PostgreSQL's generic plan of `check`'s window statement reads the
//!   bucket tables through their indexes and answers as a plan per window does; coverage
//!   rows from a hashing plan are gathered per instance;
//! * [`tls`] — PostgreSQL over TLS by `sslmode` (when the test cluster speaks TLS);
//! * [`decom`] — the decommission workflow's storage: bucket rows per hour and day,
//!   watches, the notifier lease, alerts and the outbox, reported owners;
//! * [`otel`] — OTLP ingest's series rows (compare-and-set, stored, pruned) and
//!   service-graph points counted exactly once (repeats, resets, restarts, 8 deliveries).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

pub mod backend;
mod common;
mod coverage;
mod decom;
mod inbound;
mod ingest;
mod model;
mod otel;
mod plans;
mod rollup;
mod tls;
