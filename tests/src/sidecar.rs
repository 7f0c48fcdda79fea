//! Starting a real whouses-sidecar for tests (in progress).
