//! Kubernetes mutating admission webhook that injects the sidecar (issue 6; in progress).
