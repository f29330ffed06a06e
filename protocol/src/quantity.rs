//! Kubernetes quantities. PLACEHOLDER.
