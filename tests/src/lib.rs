//! Test support for the end-to-end tests in `tests/tests/`: they run the real
//! `whouses-sidecar`, `whouses-collector` and `whouses` binaries against real servers on
//! loopback.
//!
//! * [`alerting`] — a real Alertmanager and a plain webhook receiver, for watches.
//! * [`browser`] — headless Chromium through chromedriver (WebDriver), for the page.
//! * [`bins`] — locating the built binaries and running them as owned child processes.
//! * [`wait`] — retry-until-deadline assertions instead of fixed sleeps.
//! * [`sidecar`] — starting a real `whouses-sidecar` and reading its `/stats`.
//! * [`upstream`] — small real HTTP upstreams that count what they answer.
//! * [`certs`] — a throwaway CA and server certificates (the `openssl` command).
//! * [`collector`] — starting a real `whouses-collector` and running the `whouses` CLI.
//! * [`netns`] — test hosts in network namespaces the test creates (198.18.0.0/15).
//! * [`reports`] — batches as a sidecar would send them, for tests of the collector.
//! * [`postgres`] — a database of its own per test on `WHOUSES_TEST_POSTGRES_URL`, or a
//!   whole throwaway cluster (`tests/pg/cluster.sh`) for a test that stops it.
//!
//! The binaries must be built first (`cargo build --workspace --bins`); the README's test
//! command and `.ci/run` do that.

pub mod alerting;
pub mod bins;
pub mod browser;
pub mod certs;
pub mod collector;
pub mod netns;
pub mod postgres;
pub mod reports;
pub mod sidecar;
pub mod upstream;
pub mod wait;
