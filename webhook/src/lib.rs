//! The Kubernetes injection webhook (`whouses-webhook`): a mutating admission webhook
//! that adds the sidecar to pods labelled `whouses.io/inject: "true"` (or in a labelled
//! namespace) and points the app containers' proxy settings at it — and that admits a pod
//! unchanged, saying why, whenever the sidecar could not start in it.
//!
//! * [`config`] — the injection flags, checked as a whole at startup.
//! * [`mutate`] — pure: AdmissionReview in, AdmissionReview (with a JSON patch) and an
//!   outcome out; the decisions read top to bottom in `decide` and `plan`.
//! * [`names`] — the sidecar's service, environment and instance, checked as it checks them.
//! * [`env`] — the app containers' proxy variables, meeting the app's own.
//! * [`sidecar`] — the injected container (loopback admin, separate probe port) and the
//!   collector CA volume.
//! * [`ca`] — the collector CA, read and checked for each review.
//! * [`metrics`] — counters for `/metrics`.
//! * [`server`] — HTTPS (rustls) serving `/mutate`, `/mutate/namespace`, `/metrics`,
//!   reloading the certificate when cert-manager or the chart rotates it.

pub mod ca;
pub mod config;
pub mod env;
pub mod metrics;
pub mod mutate;
pub mod names;
pub mod server;
pub mod sidecar;
