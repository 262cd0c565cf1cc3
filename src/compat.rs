//! Which upstream release to behave like (`--emulated-version`): every behaviour that
//! differs between supported releases is one named field of [`Compat`], filled from one
//! table row per release. Code asks `compat.<decision>`, never compares versions.

use crate::config::{
    ConfigError, FeatureGates, FieldError, FieldErrorKind, KubeProxyConfiguration,
};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// An upstream minor release kube-proxy-rs can emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EmulatedVersion {
    V1_30,
    V1_35,
}

impl EmulatedVersion {
    /// Oldest first.
    pub const SUPPORTED: &'static [EmulatedVersion] =
        &[EmulatedVersion::V1_30, EmulatedVersion::V1_35];
    /// The default of the offline commands and of `--objects`.
    pub const NEWEST: EmulatedVersion = EmulatedVersion::V1_35;

    pub fn as_str(self) -> &'static str {
        match self {
            EmulatedVersion::V1_30 => "1.30",
            EmulatedVersion::V1_35 => "1.35",
        }
    }

    /// Parses `1.35`, `v1.35` (and `1.35.2`: the patch is ignored).
    pub fn parse(s: &str) -> Result<EmulatedVersion, UnsupportedVersion> {
        let t = s.trim();
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let mut parts = t.split('.');
        let minor = match (parts.next(), parts.next()) {
            (Some("1"), Some(minor)) => minor,
            _ => return Err(UnsupportedVersion(s.to_string())),
        };
        if parts.next().is_some_and(|p| p.parse::<u32>().is_err()) {
            return Err(UnsupportedVersion(s.to_string()));
        }
        Self::SUPPORTED
            .iter()
            .copied()
            .find(|v| v.as_str().strip_prefix("1.") == Some(minor))
            .ok_or_else(|| UnsupportedVersion(s.to_string()))
    }

    /// The behaviour table: one row per supported release.
    pub fn compat(self) -> Compat {
        match self {
            EmulatedVersion::V1_30 => Compat {
                version: self,
                nfacct_rules: false,
                topology: TopologyRule::GatedByAnnotation,
                node_hints: false,
                zero_prefix_means_all: false,
                node_port_addresses_primary: false,
                locked_gates: &[],
                extra_gates: &[],
                slice_change: SliceChangeRule::ReadFields,
                service_info_has_topology_annotation: true,
                metrics_ip_family_label: false,
                health_json: false,
                periodic_full_sync: PeriodicFullSync::Never,
                runner: RunnerRule::BoundedFrequency,
                node_change: NodeChangeRule::AnyLabel,
                exit_on_node_change: false,
                conntrack_cleanup: ConntrackRule::PerChange,
                cleanup_extended: false,
            },
            EmulatedVersion::V1_35 => Compat {
                version: self,
                nfacct_rules: true,
                topology: TopologyRule::WheneverHinted,
                node_hints: true,
                zero_prefix_means_all: true,
                node_port_addresses_primary: true,
                locked_gates: &[
                    "LoadBalancerIPMode",
                    "ServiceTrafficDistribution",
                    "TopologyAwareHints",
                ],
                extra_gates: &[("PreferSameTrafficDistribution", true)],
                slice_change: SliceChangeRule::AnyObjectChange,
                service_info_has_topology_annotation: false,
                metrics_ip_family_label: true,
                health_json: true,
                periodic_full_sync: PeriodicFullSync::HourlyExceptLargeClusters,
                runner: RunnerRule::WaitAfterRun,
                node_change: NodeChangeRule::ZoneLabel,
                exit_on_node_change: true,
                conntrack_cleanup: ConntrackRule::Reconcile,
                cleanup_extended: true,
            },
        }
    }
}

/// Why the daemon emulates what it does (one INFO line at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionChoice {
    pub version: EmulatedVersion,
    /// What the API server reported (`gitVersion`), if it was asked.
    pub found: Option<String>,
    pub reason: &'static str,
}

impl EmulatedVersion {
    /// The release to emulate for an API server of `major.minor`: up to 1.30 → 1.30
    /// (older clusters run what 1.30 writes); 1.31 and later → 1.35, the newest
    /// supported, since the payload changes (nfacct rules) arrive in 1.31.
    pub fn for_server(major: u32, minor: u32) -> (EmulatedVersion, &'static str) {
        match (major, minor) {
            (1, m) if m <= 30 => (EmulatedVersion::V1_30, "API server is 1.30 or older"),
            (1, m) if m <= 35 => (
                EmulatedVersion::V1_35,
                "API server is 1.31..1.35: emulating the newest supported release",
            ),
            _ => (
                EmulatedVersion::NEWEST,
                "API server is newer than the newest supported release",
            ),
        }
    }

    /// Reads the `major`/`minor` fields of `/version` (`"30+"` on some distributions)
    /// or, failing that, `gitVersion` (`v1.33.2-eks-1`).
    pub fn parse_server_version(major: &str, minor: &str, git: &str) -> Option<(u32, u32)> {
        let digits = |s: &str| -> Option<u32> {
            let d: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        };
        if let (Some(a), Some(b)) = (digits(major), digits(minor)) {
            return Some((a, b));
        }
        let g = git.trim().strip_prefix(['v', 'V']).unwrap_or(git.trim());
        let mut parts = g.split('.');
        Some((digits(parts.next()?)?, digits(parts.next()?)?))
    }
}

impl fmt::Display for EmulatedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EmulatedVersion {
    type Err = UnsupportedVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EmulatedVersion::parse(s)
    }
}

/// A version string that names no supported release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported emulated version {0:?}: supported versions are {list}", list = supported_list())]
pub struct UnsupportedVersion(pub String);

fn supported_list() -> String {
    EmulatedVersion::SUPPORTED
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// When topology hints are used (spec §3.1.3, §8 P3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyRule {
    /// v1.30: only with TopologyAwareHints and a topology annotation, or with
    /// ServiceTrafficDistribution.
    GatedByAnnotation,
    /// Newer: whenever every ready endpoint has hints and one matches; no annotation read.
    WheneverHinted,
}

/// What makes an EndpointSlice event a pending change of its Service (spec §3.1, §5.5):
/// any pending change marks the Service "endpoints changed", even when the merged
/// endpoint set comes out identical (an empty slice added beside the real one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceChangeRule {
    /// v1.30: the fields kube-proxy keeps of the slice differ (ports sorted by number;
    /// endpoints sorted by address, with node name, zone, zone hints and the three
    /// conditions defaulted), or the slice was added or deleted.
    ReadFields,
    /// Newer: any change of the slice object (conditions spelled out, labels, order).
    AnyObjectChange,
}

/// S1/S3: when a sync is full although nothing forced it (spec §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodicFullSync {
    /// v1.30: never (the hourly run is a partial sync).
    Never,
    /// Newer: when the last successful full sync is an hour old or older...
    Hourly,
    /// ...except in large-cluster mode (PR #138571, in 1.34.x–1.36.x patches).
    HourlyExceptLargeClusters,
}

/// S2: the rate limiter in front of the sync function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerRule {
    /// v1.30: token bucket of 2 refilled per minSyncPeriod, RetryAfter (spec §6.3).
    BoundedFrequency,
    /// Newer: no burst, minSyncPeriod after each run, failed run retried after
    /// syncPeriod, a success cancels the retry (spec §8.3 S2).
    WaitAfterRun,
}

/// S4: which Node changes force a full sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChangeRule {
    /// v1.30: any change of the label map; a deletion clears the labels (spec §6.4).
    AnyLabel,
    /// Newer: only `topology.kubernetes.io/zone`; a deletion changes nothing.
    ZoneLabel,
}

/// S5: which UDP conntrack entries are deleted after a successful sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConntrackRule {
    /// v1.30: per change (a port added/removed, an endpoint gone), spec §6.7.
    PerChange,
    /// Newer: every entry to a UDP service with serving endpoints whose reply source is
    /// not one of them (spec §8.3 S5).
    Reconcile,
}

/// The behaviour differences between supported releases, each a named decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compat {
    pub version: EmulatedVersion,
    /// P1/P2: the INVALID drop and localhost NodePort rules count into nfacct objects
    /// (only where the node has them: see `HostFacts::nfacct`).
    pub nfacct_rules: bool,
    /// P3.
    pub topology: TopologyRule,
    /// P3: `hints.forNodes` (PreferSameNode) take precedence over zone hints.
    pub node_hints: bool,
    /// A `/0` in `loadBalancerSourceRanges` allows all (no KUBE-FW), and any `/0` in
    /// `nodePortAddresses` means all (v1.30: only the strings `0.0.0.0/0` / `::/0`).
    pub zero_prefix_means_all: bool,
    /// P5: `nodePortAddresses: [primary]` = the node's primary IPs (v1.30: all).
    pub node_port_addresses_primary: bool,
    /// GA gates that cannot be set to false (a config that does is an error).
    pub locked_gates: &'static [&'static str],
    /// Gates this release knows beyond the v1.30 table, with their defaults (beta).
    pub extra_gates: &'static [(&'static str, bool)],
    pub slice_change: SliceChangeRule,
    /// S1/S3.
    pub periodic_full_sync: PeriodicFullSync,
    /// S2.
    pub runner: RunnerRule,
    /// S4: which Node changes force a full sync.
    pub node_change: NodeChangeRule,
    /// S4: the daemon exits (to be restarted) when its Node's IPs change or the Node is
    /// deleted.
    pub exit_on_node_change: bool,
    /// S5.
    pub conntrack_cleanup: ConntrackRule,
    /// S6: `--cleanup` also deletes KUBE-MARK-MASQ, KUBE-PROXY-FIREWALL and the canary
    /// chains (v1.30.3 leaves them, unreferenced).
    pub cleanup_extended: bool,
    /// The topology annotation is read and part of the service-port info (its change is a
    /// change of the Service).
    pub service_info_has_topology_annotation: bool,
    /// O1: the sync metrics carry `ip_family` (`IPv4`/`IPv6`), one series per proxier.
    pub metrics_ip_family_label: bool,
    /// O4: /healthz and /livez answer compact JSON with RFC 3339 times and a per-family
    /// `status`; `nodeEligible` is false until this Node is known.
    pub health_json: bool,
}

impl Default for Compat {
    /// The newest supported release.
    fn default() -> Self {
        EmulatedVersion::NEWEST.compat()
    }
}

impl Compat {
    pub fn v1_30() -> Compat {
        EmulatedVersion::V1_30.compat()
    }

    pub fn v1_35() -> Compat {
        EmulatedVersion::V1_35.compat()
    }

    /// A feature gate's value in this release.
    pub fn gate(&self, gates: &FeatureGates, name: &str) -> bool {
        if self.locked_gates.contains(&name) {
            return true;
        }
        match self.extra_gates.iter().find(|(n, _)| *n == name) {
            Some(&(_, default)) => gates.enabled_beta_or(name, default),
            None => gates.enabled(name),
        }
    }

    /// Locked gates the configuration sets to false: a fatal error in this release.
    pub fn locked_gates_disabled(&self, gates: &FeatureGates) -> Vec<&'static str> {
        self.locked_gates
            .iter()
            .copied()
            .filter(|g| gates.explicit().get(*g) == Some(&false))
            .collect()
    }
}

/// What this release refuses beyond v1.30's validation: a locked GA gate set to false
/// (kube-proxy 1.35 does not start). `path`: the config file, for the error's line.
pub fn check_config(
    cfg: &KubeProxyConfiguration,
    compat: &Compat,
    path: Option<&Path>,
) -> Result<(), ConfigError> {
    let errors: Vec<FieldError> = compat
        .locked_gates_disabled(&cfg.feature_gates)
        .into_iter()
        .map(|g| {
            let field = format!("featureGates.{g}");
            FieldError {
                kind: FieldErrorKind::Invalid,
                line: path.and_then(|p| crate::config::field_line(p, &field)),
                field,
                value: "false".into(),
                detail: format!(
                    "cannot set feature gate {g} to false, feature is locked to true in {}",
                    compat.version
                ),
            }
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        origin: path.map(|p| p.display().to_string()).unwrap_or_default(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_or_without_v_and_patch() {
        assert_eq!(EmulatedVersion::parse("1.30"), Ok(EmulatedVersion::V1_30));
        assert_eq!(EmulatedVersion::parse("v1.35"), Ok(EmulatedVersion::V1_35));
        assert_eq!(EmulatedVersion::parse("1.35.2"), Ok(EmulatedVersion::V1_35));
        for bad in ["1.31", "1.36", "2.30", "1", "", "1.35.x", "latest", "1.3"] {
            let e = EmulatedVersion::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("supported versions are 1.30, 1.35"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn server_versions_map_to_the_supported_set() {
        let v = |a, b| EmulatedVersion::for_server(a, b).0;
        assert_eq!(v(1, 25), EmulatedVersion::V1_30);
        assert_eq!(v(1, 29), EmulatedVersion::V1_30);
        assert_eq!(v(1, 30), EmulatedVersion::V1_30);
        assert_eq!(v(1, 31), EmulatedVersion::V1_35);
        assert_eq!(v(1, 33), EmulatedVersion::V1_35);
        assert_eq!(v(1, 35), EmulatedVersion::V1_35);
        assert_eq!(v(1, 36), EmulatedVersion::V1_35);
        assert_eq!(v(2, 0), EmulatedVersion::V1_35);
        let p = EmulatedVersion::parse_server_version;
        assert_eq!(p("1", "33", "v1.33.2"), Some((1, 33)));
        assert_eq!(p("1", "30+", "v1.30.4-gke.1"), Some((1, 30)));
        assert_eq!(p("", "", "v1.29.0-eks-2"), Some((1, 29)));
        assert_eq!(p("", "", "garbage"), None);
    }

    #[test]
    fn locked_gates_read_true_and_false_settings_are_reported() {
        let g = FeatureGates::parse_flag("TopologyAwareHints=false,AllBeta=false").unwrap();
        let c = Compat::v1_35();
        assert!(c.gate(&g, "TopologyAwareHints"));
        assert_eq!(c.locked_gates_disabled(&g), ["TopologyAwareHints"]);
        assert!(
            !c.gate(&g, "PreferSameTrafficDistribution"),
            "AllBeta=false"
        );
        assert!(c.gate(&FeatureGates::default(), "PreferSameTrafficDistribution"));
        let c = Compat::v1_30();
        assert!(!c.gate(&g, "TopologyAwareHints"));
        assert!(c.locked_gates_disabled(&g).is_empty());
        assert!(!c.gate(&FeatureGates::default(), "ServiceTrafficDistribution"));
    }
}
