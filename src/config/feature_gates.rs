//! Feature gates as kube-proxy v1.30 sees them: explicit settings from the
//! config file or `--feature-gates`, falling back to the release defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Alpha,
    Beta,
}

/// v1.30 gates that matter to kube-proxy, with their defaults. Other names
/// are accepted with a warning: the real registry has hundreds of gates and
/// a config written for another component version must not be fatal.
const KNOWN_GATES: &[(&str, bool, Stage)] = &[
    ("TopologyAwareHints", true, Stage::Beta),
    ("ServiceTrafficDistribution", false, Stage::Alpha),
    ("LoadBalancerIPMode", true, Stage::Beta),
    ("KubeProxyDrainingTerminatingNodes", true, Stage::Beta),
    ("NFTablesProxyMode", false, Stage::Alpha),
    ("MultiCIDRServiceAllocator", false, Stage::Alpha),
    ("LoggingAlphaOptions", false, Stage::Alpha),
    ("LoggingBetaOptions", true, Stage::Beta),
];

const ALL_ALPHA: &str = "AllAlpha";
const ALL_BETA: &str = "AllBeta";

/// Explicitly set feature gates; anything not set reads as its v1.30 default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    explicit: BTreeMap<String, bool>,
}

impl FeatureGates {
    /// Whether `name` is enabled: an explicit setting wins, then `AllAlpha` /
    /// `AllBeta` for gates of that stage, then the release default. Unknown,
    /// unset gates are off.
    pub fn enabled(&self, name: &str) -> bool {
        if let Some(&v) = self.explicit.get(name) {
            return v;
        }
        let Some(&(_, default, stage)) = KNOWN_GATES.iter().find(|(n, _, _)| *n == name) else {
            return false;
        };
        let all = match stage {
            Stage::Alpha => ALL_ALPHA,
            Stage::Beta => ALL_BETA,
        };
        self.explicit.get(all).copied().unwrap_or(default)
    }

    /// A beta gate not in the v1.30 table (see `compat`): explicit setting, then
    /// `AllBeta`, then `default`.
    pub fn enabled_beta_or(&self, name: &str, default: bool) -> bool {
        self.explicit
            .get(name)
            .or_else(|| self.explicit.get(ALL_BETA))
            .copied()
            .unwrap_or(default)
    }

    /// Sets a gate explicitly. Unknown names are kept (so `enabled` reports
    /// them) but logged, as the real registry would have rejected a typo.
    pub fn set(&mut self, name: &str, value: bool) {
        if !is_known(name) {
            tracing::warn!(
                gate = name,
                value,
                "unrecognized feature gate, ignoring its meaning"
            );
        }
        self.explicit.insert(name.to_string(), value);
    }

    /// Parses a `--feature-gates` value such as `"A=true,B=false"` into the
    /// explicit settings it makes. Apply it over other settings with
    /// [`FeatureGates::merge`].
    pub fn parse_flag(s: &str) -> Result<FeatureGates, ConfigError> {
        let mut gates = FeatureGates::default();
        let err = |message: String| ConfigError::InvalidFeatureGates {
            value: s.to_string(),
            message,
        };
        // Same rules as the Go flag: empty items are skipped, whitespace
        // around names and values is ignored, values use strconv.ParseBool.
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => return Err(err(format!("missing bool value for {}", item.trim()))),
            };
            if name.is_empty() {
                return Err(err(format!("missing feature gate name in {item:?}")));
            }
            let value = parse_go_bool(value)
                .ok_or_else(|| err(format!("invalid value of {name}={value}: not a boolean")))?;
            gates.set(name, value);
        }
        Ok(gates)
    }

    /// Applies `other`'s explicit settings on top of these (later wins).
    pub fn merge(&mut self, other: &FeatureGates) {
        for (k, v) in &other.explicit {
            self.explicit.insert(k.clone(), *v);
        }
    }

    /// The explicitly set gates, sorted by name.
    pub fn explicit(&self) -> &BTreeMap<String, bool> {
        &self.explicit
    }

    /// Every gate kube-proxy knows about with its effective value, plus any
    /// explicitly set unknown gates.
    pub fn effective(&self) -> BTreeMap<String, bool> {
        let mut all: BTreeMap<String, bool> = KNOWN_GATES
            .iter()
            .map(|(n, _, _)| (n.to_string(), self.enabled(n)))
            .collect();
        for (k, v) in &self.explicit {
            all.insert(k.clone(), *v);
        }
        all
    }
}

fn is_known(name: &str) -> bool {
    // Newer releases' gates (see `compat`): no typo warning for them.
    name == "PreferSameTrafficDistribution"
        || name == ALL_ALPHA
        || name == ALL_BETA
        || KNOWN_GATES.iter().any(|(n, _, _)| *n == name)
}

/// Go's strconv.ParseBool, which is what `--feature-gates` uses.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl Serialize for FeatureGates {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.explicit.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FeatureGates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A null value for a gate leaves Go's map entry at false.
        let map: Option<super::wire::FeatureGateMap> = Option::deserialize(deserializer)?;
        let mut gates = FeatureGates::default();
        for (name, value) in map.unwrap_or_default() {
            gates.set(&name, value.is_some_and(|b| b.0));
        }
        Ok(gates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v130_defaults() {
        let g = FeatureGates::default();
        assert!(g.enabled("TopologyAwareHints"));
        assert!(!g.enabled("ServiceTrafficDistribution"));
        assert!(g.enabled("LoadBalancerIPMode"));
        assert!(g.enabled("KubeProxyDrainingTerminatingNodes"));
        assert!(!g.enabled("NFTablesProxyMode"));
        assert!(!g.enabled("MultiCIDRServiceAllocator"));
        assert!(!g.enabled("AllAlpha"));
        assert!(!g.enabled("AllBeta"));
        assert!(!g.enabled("SomethingUnknown"));
    }

    #[test]
    fn parse_flag_sets_explicit_values() {
        let g = FeatureGates::parse_flag(
            " TopologyAwareHints = false,NFTablesProxyMode=true,,ServiceTrafficDistribution=1",
        )
        .unwrap();
        assert!(!g.enabled("TopologyAwareHints"));
        assert!(g.enabled("NFTablesProxyMode"));
        assert!(g.enabled("ServiceTrafficDistribution"));
        assert_eq!(g.explicit().len(), 3);
        // Untouched gates keep their defaults.
        assert!(g.enabled("LoadBalancerIPMode"));
        assert!(FeatureGates::parse_flag("").unwrap().explicit().is_empty());
    }

    #[test]
    fn parse_flag_rejects_malformed_items() {
        let e = FeatureGates::parse_flag("A=true,B")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing bool value for B"), "{e}");
        let e = FeatureGates::parse_flag("A=maybe").unwrap_err().to_string();
        assert!(e.contains("invalid value of A=maybe"), "{e}");
        assert!(FeatureGates::parse_flag("=true").is_err());
    }

    #[test]
    fn unknown_gates_are_kept_not_fatal() {
        let g = FeatureGates::parse_flag("NoSuchGate=true").unwrap();
        assert!(g.enabled("NoSuchGate"));
    }

    #[test]
    fn all_beta_and_all_alpha_switch_unset_gates_of_their_stage() {
        let g = FeatureGates::parse_flag("AllBeta=false,LoadBalancerIPMode=true").unwrap();
        assert!(!g.enabled("TopologyAwareHints"));
        assert!(!g.enabled("KubeProxyDrainingTerminatingNodes"));
        assert!(g.enabled("LoadBalancerIPMode"), "explicit setting wins");
        assert!(!g.enabled("NFTablesProxyMode"), "alpha gates unaffected");

        let g = FeatureGates::parse_flag("AllAlpha=true").unwrap();
        assert!(g.enabled("NFTablesProxyMode"));
        assert!(g.enabled("ServiceTrafficDistribution"));
        assert!(!g.enabled("UnknownAlphaGate"));
    }

    #[test]
    fn merge_lets_later_settings_win() {
        let mut g = FeatureGates::parse_flag("A=true,B=true").unwrap();
        g.merge(&FeatureGates::parse_flag("B=false").unwrap());
        assert!(g.enabled("A"));
        assert!(!g.enabled("B"));
        assert_eq!(g.effective().get("B"), Some(&false));
        assert_eq!(g.effective().get("TopologyAwareHints"), Some(&true));
    }
}
