//! `shoald`, the shoal daemon.
pub mod state;
