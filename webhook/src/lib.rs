//! The Kubernetes injection webhook (`whouses-webhook`): a mutating admission webhook
//! that adds the sidecar to pods labelled `whouses.io/inject: "true"` (or in a labelled
//! namespace) and points the app containers' proxy settings at it.
//!
//! * [`mutate`] — pure: AdmissionReview in, AdmissionReview (with a JSON patch) out.
//! * [`server`] — HTTPS (rustls) serving `/mutate`, reloading the certificate when
//!   cert-manager or the chart rotates it.

pub mod mutate;
pub mod server;
