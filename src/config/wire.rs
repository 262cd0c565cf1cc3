//! The on-disk v1alpha1 schema. Decoding happens into these structs first so
//! that Go semantics can be reproduced before building the public types:
//! pointer fields (`Option` here) are defaulted only when absent or null,
//! null on any other field leaves its zero value, and durations stay signed
//! until validation has had a chance to report negative ones.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::duration::{format_go_nanos, parse_go_nanos};
use super::{
    ClientConnectionConfiguration, DetectLocalConfiguration, FeatureGates, FieldError,
    KubeProxyConfiguration, KubeProxyConntrackConfiguration, KubeProxyIPTablesConfiguration,
    KubeProxyIPVSConfiguration, KubeProxyNFTablesConfiguration, KubeProxyWinkernelConfiguration,
    API_VERSION, KIND,
};

/// Upstream defaults for fields that are pointers in v1alpha1.
const DEFAULT_OOM_SCORE_ADJ: i32 = -999;
const DEFAULT_MASQUERADE_BIT: i32 = 14;
const DEFAULT_CONNTRACK_MAX_PER_CORE: i32 = 32 * 1024;
const DEFAULT_CONNTRACK_MIN: i32 = 128 * 1024;
const DEFAULT_TCP_ESTABLISHED: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TCP_CLOSE_WAIT: Duration = Duration::from_secs(3600);

// `expecting` makes type errors name the upstream types ("expected struct
// KubeProxyIPTablesConfiguration") rather than these private ones.

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct WireConfig {
    #[serde(default, deserialize_with = "api_version")]
    pub api_version: Option<String>,
    #[serde(default, deserialize_with = "kind")]
    pub kind: Option<String>,

    #[serde(default)]
    feature_gates: FeatureGates,
    #[serde(default, deserialize_with = "nullable")]
    bind_address: String,
    #[serde(default, deserialize_with = "nullable")]
    healthz_bind_address: String,
    #[serde(default, deserialize_with = "nullable")]
    metrics_bind_address: String,
    #[serde(default, deserialize_with = "go_bool")]
    bind_address_hard_fail: bool,
    #[serde(default, deserialize_with = "go_bool")]
    enable_profiling: bool,
    #[serde(default, rename = "clusterCIDR", deserialize_with = "nullable")]
    cluster_cidr: String,
    #[serde(default, deserialize_with = "nullable")]
    hostname_override: String,
    #[serde(default, deserialize_with = "nullable")]
    client_connection: WireClientConnection,
    #[serde(default, deserialize_with = "nullable")]
    iptables: WireIPTables,
    #[serde(default, deserialize_with = "nullable")]
    ipvs: WireIPVS,
    #[serde(default, deserialize_with = "nullable")]
    nftables: WireNFTables,
    #[serde(default)]
    oom_score_adj: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    mode: String,
    #[serde(default, deserialize_with = "nullable")]
    port_range: String,
    #[serde(default, deserialize_with = "nullable")]
    conntrack: WireConntrack,
    #[serde(default)]
    config_sync_period: GoDuration,
    #[serde(default, deserialize_with = "string_list")]
    node_port_addresses: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    winkernel: WireWinkernel,
    #[serde(default, deserialize_with = "nullable")]
    show_hidden_metrics_for_version: String,
    #[serde(default, deserialize_with = "nullable")]
    detect_local_mode: String,
    #[serde(default, deserialize_with = "nullable")]
    detect_local: WireDetectLocal,
    #[serde(default, deserialize_with = "logging")]
    logging: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct ClientConnectionConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireClientConnection {
    #[serde(default, deserialize_with = "nullable")]
    kubeconfig: String,
    #[serde(default, deserialize_with = "nullable")]
    accept_content_types: String,
    #[serde(default, deserialize_with = "nullable")]
    content_type: String,
    #[serde(default, deserialize_with = "nullable")]
    qps: f32,
    #[serde(default, deserialize_with = "nullable")]
    burst: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyIPTablesConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireIPTables {
    #[serde(default)]
    masquerade_bit: Option<i32>,
    #[serde(default, deserialize_with = "go_bool")]
    masquerade_all: bool,
    #[serde(default, deserialize_with = "optional_go_bool")]
    localhost_node_ports: Option<bool>,
    #[serde(default)]
    sync_period: GoDuration,
    #[serde(default)]
    min_sync_period: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyIPVSConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireIPVS {
    #[serde(default)]
    sync_period: GoDuration,
    #[serde(default)]
    min_sync_period: GoDuration,
    #[serde(default, deserialize_with = "nullable")]
    scheduler: String,
    #[serde(default, rename = "excludeCIDRs", deserialize_with = "string_list")]
    exclude_cidrs: Vec<String>,
    #[serde(default, rename = "strictARP", deserialize_with = "go_bool")]
    strict_arp: bool,
    #[serde(default)]
    tcp_timeout: GoDuration,
    #[serde(default)]
    tcp_fin_timeout: GoDuration,
    #[serde(default)]
    udp_timeout: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyNFTablesConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireNFTables {
    #[serde(default)]
    masquerade_bit: Option<i32>,
    #[serde(default, deserialize_with = "go_bool")]
    masquerade_all: bool,
    #[serde(default)]
    sync_period: GoDuration,
    #[serde(default)]
    min_sync_period: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyConntrackConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireConntrack {
    #[serde(default)]
    max_per_core: Option<i32>,
    #[serde(default)]
    min: Option<i32>,
    #[serde(default)]
    tcp_established_timeout: Option<GoDuration>,
    #[serde(default)]
    tcp_close_wait_timeout: Option<GoDuration>,
    #[serde(default, deserialize_with = "go_bool")]
    tcp_be_liberal: bool,
    #[serde(default)]
    udp_timeout: GoDuration,
    #[serde(default)]
    udp_stream_timeout: GoDuration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct KubeProxyWinkernelConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireWinkernel {
    #[serde(default, deserialize_with = "nullable")]
    network_name: String,
    #[serde(default, deserialize_with = "nullable")]
    source_vip: String,
    #[serde(default, rename = "enableDSR", deserialize_with = "go_bool")]
    enable_dsr: bool,
    #[serde(default, deserialize_with = "nullable")]
    root_hns_endpoint_name: String,
    #[serde(default, deserialize_with = "go_bool")]
    forward_health_check_vip: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    expecting = "struct DetectLocalConfiguration",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
struct WireDetectLocal {
    #[serde(default, deserialize_with = "nullable")]
    bridge_interface: String,
    #[serde(default, deserialize_with = "nullable")]
    interface_name_prefix: String,
}

/// Collects negative durations while converting: `std::time::Duration` has
/// no sign, so they are reported here with upstream's validation wording and
/// replaced by zero (which the caller never sees, as parsing then fails).
struct Converter<'a> {
    mode: &'a str,
    errors: Vec<FieldError>,
}

enum Check {
    Positive,
    NonNegative,
    /// Only validated upstream when the named mode is selected; otherwise a
    /// negative value is accepted and has no effect.
    OnlyInMode(&'static str, &'static Check),
}

impl Converter<'_> {
    fn duration(&mut self, field: &str, d: GoDuration, check: &Check) -> Duration {
        if d.0 >= 0 {
            return Duration::from_nanos(d.0.unsigned_abs());
        }
        let check = match check {
            Check::OnlyInMode(mode, inner) if *mode == self.mode => inner,
            Check::OnlyInMode(..) => {
                tracing::warn!(field, value = %format_go_nanos(d.0.into()), "ignoring negative duration of an unused proxy mode");
                return Duration::ZERO;
            }
            other => other,
        };
        let detail = match check {
            Check::Positive => "must be greater than 0",
            _ => "must be greater than or equal to 0",
        };
        self.errors.push(FieldError::invalid(
            field,
            format_go_nanos(d.0.into()),
            detail,
        ));
        Duration::ZERO
    }
}

impl WireConfig {
    /// Builds the public struct, applying the pointer-field defaults.
    /// Zero-value defaults are left to `apply_defaults`.
    pub(crate) fn into_config(self) -> (KubeProxyConfiguration, Vec<FieldError>) {
        let mode = if self.mode.is_empty() {
            "iptables".to_string()
        } else {
            self.mode.clone()
        };
        let mut cv = Converter {
            mode: &mode,
            errors: Vec::new(),
        };
        use Check::*;
        let ipt = self.iptables;
        let iptables = KubeProxyIPTablesConfiguration {
            masquerade_bit: ipt.masquerade_bit.unwrap_or(DEFAULT_MASQUERADE_BIT),
            masquerade_all: ipt.masquerade_all,
            localhost_node_ports: ipt.localhost_node_ports.unwrap_or(true),
            sync_period: cv.duration("iptables.syncPeriod", ipt.sync_period, &Positive),
            min_sync_period: cv.duration(
                "iptables.minSyncPeriod",
                ipt.min_sync_period,
                &NonNegative,
            ),
        };
        let v = self.ipvs;
        let ipvs = KubeProxyIPVSConfiguration {
            sync_period: cv.duration(
                "ipvs.syncPeriod",
                v.sync_period,
                &OnlyInMode("ipvs", &Positive),
            ),
            min_sync_period: cv.duration(
                "ipvs.minSyncPeriod",
                v.min_sync_period,
                &OnlyInMode("ipvs", &NonNegative),
            ),
            scheduler: v.scheduler,
            exclude_cidrs: v.exclude_cidrs,
            strict_arp: v.strict_arp,
            tcp_timeout: cv.duration(
                "ipvs.tcpTimeout",
                v.tcp_timeout,
                &OnlyInMode("ipvs", &NonNegative),
            ),
            tcp_fin_timeout: cv.duration(
                "ipvs.tcpFinTimeout",
                v.tcp_fin_timeout,
                &OnlyInMode("ipvs", &NonNegative),
            ),
            udp_timeout: cv.duration(
                "ipvs.udpTimeout",
                v.udp_timeout,
                &OnlyInMode("ipvs", &NonNegative),
            ),
        };
        let n = self.nftables;
        let nftables = KubeProxyNFTablesConfiguration {
            masquerade_bit: n.masquerade_bit.unwrap_or(DEFAULT_MASQUERADE_BIT),
            masquerade_all: n.masquerade_all,
            sync_period: cv.duration(
                "nftables.syncPeriod",
                n.sync_period,
                &OnlyInMode("nftables", &Positive),
            ),
            min_sync_period: cv.duration(
                "nftables.minSyncPeriod",
                n.min_sync_period,
                &OnlyInMode("nftables", &NonNegative),
            ),
        };
        let c = self.conntrack;
        let conntrack = KubeProxyConntrackConfiguration {
            max_per_core: c.max_per_core.unwrap_or(DEFAULT_CONNTRACK_MAX_PER_CORE),
            min: c.min.unwrap_or(DEFAULT_CONNTRACK_MIN),
            tcp_established_timeout: match c.tcp_established_timeout {
                Some(d) => cv.duration("conntrack.tcpEstablishedTimeout", d, &NonNegative),
                None => DEFAULT_TCP_ESTABLISHED,
            },
            tcp_close_wait_timeout: match c.tcp_close_wait_timeout {
                Some(d) => cv.duration("conntrack.tcpCloseWaitTimeout", d, &NonNegative),
                None => DEFAULT_TCP_CLOSE_WAIT,
            },
            tcp_be_liberal: c.tcp_be_liberal,
            udp_timeout: cv.duration("conntrack.udpTimeout", c.udp_timeout, &NonNegative),
            udp_stream_timeout: cv.duration(
                "conntrack.udpStreamTimeout",
                c.udp_stream_timeout,
                &NonNegative,
            ),
        };
        let config_sync_period =
            cv.duration("configSyncPeriod", self.config_sync_period, &Positive);
        let cc = self.client_connection;
        let w = self.winkernel;
        let config = KubeProxyConfiguration {
            bind_address: self.bind_address,
            healthz_bind_address: self.healthz_bind_address,
            metrics_bind_address: self.metrics_bind_address,
            bind_address_hard_fail: self.bind_address_hard_fail,
            enable_profiling: self.enable_profiling,
            cluster_cidr: self.cluster_cidr,
            hostname_override: self.hostname_override,
            client_connection: ClientConnectionConfiguration {
                kubeconfig: cc.kubeconfig,
                accept_content_types: cc.accept_content_types,
                content_type: cc.content_type,
                qps: cc.qps,
                burst: cc.burst,
            },
            iptables,
            ipvs,
            nftables,
            winkernel: KubeProxyWinkernelConfiguration {
                network_name: w.network_name,
                source_vip: w.source_vip,
                enable_dsr: w.enable_dsr,
                root_hns_endpoint_name: w.root_hns_endpoint_name,
                forward_health_check_vip: w.forward_health_check_vip,
            },
            mode: self.mode,
            port_range: self.port_range,
            conntrack,
            config_sync_period,
            node_port_addresses: self.node_port_addresses,
            oom_score_adj: self.oom_score_adj.unwrap_or(DEFAULT_OOM_SCORE_ADJ),
            detect_local_mode: self.detect_local_mode,
            detect_local: DetectLocalConfiguration {
                bridge_interface: self.detect_local.bridge_interface,
                interface_name_prefix: self.detect_local.interface_name_prefix,
            },
            show_hidden_metrics_for_version: self.show_hidden_metrics_for_version,
            logging: self.logging,
            feature_gates: self.feature_gates,
        };
        (config, cv.errors)
    }
}

/// A `metav1.Duration` as written in the file, in signed nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoDuration(pub i64);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_nanos(v).map(GoDuration).map_err(E::custom)
            }
            // Upstream hands null to time.ParseDuration as "", which fails.
            fn visit_unit<E: de::Error>(self) -> Result<GoDuration, E> {
                Err(E::custom("invalid duration \"\""))
            }
            fn visit_none<E: de::Error>(self) -> Result<GoDuration, E> {
                self.visit_unit()
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A bool as the upstream YAML 1.1 parser reads it (`yes`, `on`, `n`, ...
/// are booleans there, unlike in YAML 1.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoBool(pub bool);

impl<'de> Deserialize<'de> for GoBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GoBool, E> {
                Ok(GoBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoBool, E> {
                match v {
                    "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                    | "TRUE" => Ok(GoBool(true)),
                    "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                    | "FALSE" => Ok(GoBool(false)),
                    _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Null leaves a non-pointer Go field at its zero value.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn go_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<GoBool>::deserialize(d)?.is_some_and(|b| b.0))
}

fn optional_go_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<GoBool>::deserialize(d)?.map(|b| b.0))
}

/// A `[]string`, where a null item becomes "" as in Go.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Option<Vec<Option<String>>> = Option::deserialize(d)?;
    Ok(items
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// The logging block is kept opaque, but must be a mapping (it is a struct
/// upstream). Checked inside the visitor so the error carries the value's
/// position rather than the enclosing mapping's.
fn logging<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("struct LoggingConfiguration")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Object(Default::default()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            self.visit_unit()
        }
    }
    d.deserialize_any(V)
}

fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expect_exact(d, "apiVersion", API_VERSION)
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    expect_exact(d, "kind", KIND)
}

/// Accepts null/absent or exactly `want`, failing inside the visitor so the
/// error points at the value.
fn expect_exact<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    want: &'static str,
) -> Result<Option<String>, D::Error> {
    struct V {
        what: &'static str,
        want: &'static str,
    }
    impl Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "the string {:?}", self.want)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v == self.want {
                Ok(Some(v.to_string()))
            } else {
                Err(E::custom(format!(
                    "unsupported {} {v:?}, expected {:?}",
                    self.what, self.want
                )))
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V { what, want })
}

/// How `featureGates` is written: YAML 1.1 booleans, null meaning false.
pub(crate) type FeatureGateMap = BTreeMap<String, Option<GoBool>>;
