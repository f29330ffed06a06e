//! Label selectors. PLACEHOLDER.
