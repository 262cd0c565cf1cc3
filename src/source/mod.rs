//! Where objects come from: files (`render`, `--objects`) and the API server.

pub mod api;
pub mod duplicates;
pub mod events;
pub mod file;
pub mod guard;
pub mod into_model;
pub mod objects;
pub mod retry;
pub mod store;
