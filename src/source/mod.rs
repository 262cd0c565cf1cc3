//! Where objects come from: files (and, later, the API server).

pub mod objects;
