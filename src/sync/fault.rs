//! A test hook, off unless its variable is set: `KUBE_PROXY_RS_TEST_CORRUPT_PORT_NAME=x`
//! gives every Service port named `x` a port text iptables rejects, as a hole in the
//! model's validation would (a port name, so that a test can turn an applied Service bad
//! by renaming its port). Only the tests use it, to reach the code that copes with a payload
//! iptables-restore refuses (the real validators leave no such value to inject).

use crate::model::ClusterModel;
use std::sync::{Arc, OnceLock};

pub const ENV: &str = "KUBE_PROXY_RS_TEST_CORRUPT_PORT_NAME";
/// Not a number nor a service name: `--dport` fails to parse it.
pub const BAD_PORT: &str = "kprs-test-hook-invalid-port";

fn target() -> Option<&'static str> {
    static T: OnceLock<Option<String>> = OnceLock::new();
    T.get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Applies the hook to `model` (nothing when the variable is unset).
pub fn corrupt_from_env(model: &mut ClusterModel) {
    let Some(t) = target() else { return };
    for ports in model.services.values_mut() {
        if ports.iter().any(|sp| sp.port_name == t) {
            let mut v = (**ports).clone();
            for sp in v.iter_mut().filter(|sp| sp.port_name == t) {
                sp.port_text = BAD_PORT.to_string();
            }
            *ports = Arc::new(v);
        }
    }
}
