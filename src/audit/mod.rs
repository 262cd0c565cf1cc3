//! Audit toolkit: read real `iptables-save` dumps and compare, explain and trace them.
//!
//! [`parse`] reads save/restore text, [`norm`] makes both forms comparable, [`diff`]
//! compares a node with what kube-proxy should have written, [`explain`] maps chains back
//! to services, [`trace`] walks a packet through the rules.

pub mod attribute;
pub mod behaviour;
pub mod commands;
pub mod diff;
pub mod explain;
mod family;
pub mod forms;
pub mod lex;
pub mod norm;
pub mod owner;
pub mod parse;
mod prompt;
pub mod sym;
pub mod trace;
mod trace_match;
mod trace_text;
mod truncated;
mod unescape;
