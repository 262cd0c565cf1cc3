//! `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`, the v1.30
//! field set): strict decoding of the `--config` file, upstream defaults and
//! upstream validation.
//!
//! Decoding goes through private wire structs (see `wire.rs`) so that Go's
//! pointer/zero-value defaulting rules are kept exactly; the public structs
//! below always hold fully defaulted values.

mod duration;
mod error;
mod feature_gates;
mod locate;
mod net;
mod validation;
mod wire;

use std::path::Path;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, FieldError, FieldErrorKind};
pub use feature_gates::FeatureGates;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only accepted `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// Ports of the two HTTP servers, used when an address lacks one.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
pub const DEFAULT_METRICS_PORT: u16 = 10249;

/// Everything needed to configure kube-proxy. Field names serialize to the
/// upstream camelCase JSON names.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    pub feature_gates: FeatureGates,
    /// Overrides the node's primary IP (nothing binds to it). Default "0.0.0.0".
    pub bind_address: String,
    /// Default "0.0.0.0:10256", or "[::]:10256" when bindAddress is IPv6.
    pub healthz_bind_address: String,
    /// Default "127.0.0.1:10249", or "[::1]:10249" when bindAddress is IPv6.
    pub metrics_bind_address: String,
    pub bind_address_hard_fail: bool,
    pub enable_profiling: bool,
    /// Comma-separated; a dual-stack pair is allowed.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    pub hostname_override: String,
    pub client_connection: ClientConnectionConfiguration,
    pub iptables: KubeProxyIPTablesConfiguration,
    pub ipvs: KubeProxyIPVSConfiguration,
    pub nftables: KubeProxyNFTablesConfiguration,
    pub oom_score_adj: i32,
    /// "" is defaulted to "iptables".
    pub mode: String,
    /// Deprecated upstream and unused; kept so existing files still load.
    pub port_range: String,
    pub conntrack: KubeProxyConntrackConfiguration,
    #[serde(serialize_with = "go_duration")]
    pub config_sync_period: Duration,
    /// CIDRs, or the single keyword "primary"; empty means all addresses.
    pub node_port_addresses: Vec<String>,
    pub winkernel: KubeProxyWinkernelConfiguration,
    pub show_hidden_metrics_for_version: String,
    /// "" is defaulted to "ClusterCIDR".
    pub detect_local_mode: String,
    pub detect_local: DetectLocalConfiguration,
    /// Kept opaque (component-base LoggingConfiguration); always an object.
    pub logging: serde_json::Value,
}

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnectionConfiguration {
    pub kubeconfig: String,
    pub accept_content_types: String,
    /// Default "application/vnd.kubernetes.protobuf".
    pub content_type: String,
    /// Default 5.
    pub qps: f32,
    /// Default 10.
    pub burst: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyIPTablesConfiguration {
    /// Default 14.
    pub masquerade_bit: i32,
    pub masquerade_all: bool,
    /// Default true.
    pub localhost_node_ports: bool,
    /// Default 30s.
    #[serde(serialize_with = "go_duration")]
    pub sync_period: Duration,
    /// Default 1s.
    #[serde(serialize_with = "go_duration")]
    pub min_sync_period: Duration,
}

/// Accepted for compatibility; not used by this implementation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyIPVSConfiguration {
    #[serde(serialize_with = "go_duration")]
    pub sync_period: Duration,
    #[serde(serialize_with = "go_duration")]
    pub min_sync_period: Duration,
    pub scheduler: String,
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Vec<String>,
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    #[serde(serialize_with = "go_duration")]
    pub tcp_timeout: Duration,
    #[serde(serialize_with = "go_duration")]
    pub tcp_fin_timeout: Duration,
    #[serde(serialize_with = "go_duration")]
    pub udp_timeout: Duration,
}

/// Accepted for compatibility; not used by this implementation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyNFTablesConfiguration {
    pub masquerade_bit: i32,
    pub masquerade_all: bool,
    #[serde(serialize_with = "go_duration")]
    pub sync_period: Duration,
    #[serde(serialize_with = "go_duration")]
    pub min_sync_period: Duration,
}

/// Windows-only settings; accepted for compatibility, not used.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyWinkernelConfiguration {
    pub network_name: String,
    pub source_vip: String,
    #[serde(rename = "enableDSR")]
    pub enable_dsr: bool,
    pub root_hns_endpoint_name: String,
    pub forward_health_check_vip: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConntrackConfiguration {
    /// Default 32768; 0 leaves nf_conntrack_max alone.
    pub max_per_core: i32,
    /// Default 131072.
    pub min: i32,
    /// Default 24h; 0 leaves the sysctl alone.
    #[serde(serialize_with = "go_duration")]
    pub tcp_established_timeout: Duration,
    /// Default 1h; 0 leaves the sysctl alone.
    #[serde(serialize_with = "go_duration")]
    pub tcp_close_wait_timeout: Duration,
    pub tcp_be_liberal: bool,
    #[serde(serialize_with = "go_duration")]
    pub udp_timeout: Duration,
    #[serde(serialize_with = "go_duration")]
    pub udp_stream_timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocalConfiguration {
    /// Required when detectLocalMode is BridgeInterface.
    pub bridge_interface: String,
    /// Required when detectLocalMode is InterfaceNamePrefix.
    pub interface_name_prefix: String,
}

fn go_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

impl Default for KubeProxyConfiguration {
    /// The configuration an empty file would produce: every default applied.
    fn default() -> Self {
        let (mut config, _) = wire::WireConfig::default().into_config();
        config.apply_defaults();
        config
    }
}

impl KubeProxyConfiguration {
    /// Fills in defaults for zero-valued fields, as upstream's scheme
    /// defaulting plus its Linux platform defaults do. Idempotent.
    ///
    /// Empty `healthz_bind_address` / `metrics_bind_address` are filled in
    /// too; to disable a server (the `--healthz-port=0` case) clear the field
    /// after calling this.
    pub fn apply_defaults(&mut self) {
        if self.bind_address.is_empty() {
            self.bind_address = "0.0.0.0".to_string();
        }
        // Anything that is not an IPv4 address (even garbage, which
        // validation reports) picks the IPv6 defaults, as upstream does.
        let ipv4 =
            net::parse_ip_sloppy(&self.bind_address).is_some_and(|ip| net::is_ipv4_like(&ip));
        let (healthz_host, metrics_host) = if ipv4 {
            ("0.0.0.0", "127.0.0.1")
        } else {
            ("[::]", "[::1]")
        };
        self.healthz_bind_address = default_host_port(
            &self.healthz_bind_address,
            healthz_host,
            DEFAULT_HEALTHZ_PORT,
        );
        self.metrics_bind_address = default_host_port(
            &self.metrics_bind_address,
            metrics_host,
            DEFAULT_METRICS_PORT,
        );

        let default_zero = |d: &mut Duration, v: Duration| {
            if d.is_zero() {
                *d = v;
            }
        };
        // Zero means "unset" for these non-pointer durations, so an explicit
        // "0s" in the file is replaced too (upstream behaviour).
        default_zero(&mut self.iptables.sync_period, Duration::from_secs(30));
        default_zero(&mut self.iptables.min_sync_period, Duration::from_secs(1));
        default_zero(&mut self.ipvs.sync_period, Duration::from_secs(30));
        default_zero(&mut self.nftables.sync_period, Duration::from_secs(30));
        default_zero(&mut self.nftables.min_sync_period, Duration::from_secs(1));
        default_zero(&mut self.config_sync_period, Duration::from_secs(15 * 60));

        let cc = &mut self.client_connection;
        if cc.content_type.is_empty() {
            cc.content_type = "application/vnd.kubernetes.protobuf".to_string();
        }
        if cc.qps == 0.0 {
            cc.qps = 5.0;
        }
        if cc.burst == 0 {
            cc.burst = 10;
        }
        if !self.logging.is_object() {
            self.logging = serde_json::Value::Object(Default::default());
        }

        // Linux platform defaults, applied by upstream before validation.
        if self.mode.is_empty() {
            self.mode = "iptables".to_string();
        }
        if self.mode == "nftables" && self.node_port_addresses.is_empty() {
            self.node_port_addresses = vec!["primary".to_string()];
        }
        if self.detect_local_mode.is_empty() {
            self.detect_local_mode = "ClusterCIDR".to_string();
        }
    }

    /// Checks the configuration against the upstream v1.30 rules, reporting
    /// every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = validation::validate(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: String::new(),
                errors,
            })
        }
    }

    /// Renders the configuration as a complete v1alpha1 document (with
    /// apiVersion and kind) that [`parse_config`] reads back unchanged; for
    /// `--write-config-to`.
    pub fn to_yaml(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Document<'a> {
            api_version: &'static str,
            kind: &'static str,
            #[serde(flatten)]
            config: &'a KubeProxyConfiguration,
        }
        let doc = Document {
            api_version: API_VERSION,
            kind: KIND,
            config: self,
        };
        // Only strings, numbers, bools, sequences and string-keyed maps are
        // involved, which YAML serialization cannot fail on.
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }
}

/// Upstream: empty gets `host:port`; a bare IP gets the port appended;
/// anything else is left for validation to judge.
fn default_host_port(value: &str, default_host: &str, port: u16) -> String {
    if value.is_empty() {
        return format!("{default_host}:{port}");
    }
    if net::split_host_port(value).is_some() {
        return value.to_string();
    }
    match net::parse_ip_sloppy(value) {
        Some(ip) if net::is_ipv4_like(&ip) && !value.contains(':') => format!("{value}:{port}"),
        Some(_) => format!("[{value}]:{port}"),
        None => value.to_string(),
    }
}

/// Decodes, defaults and validates a KubeProxyConfiguration document.
/// `origin` names the source (usually the file path) in error messages.
pub fn parse_config(text: &str, origin: &str) -> Result<KubeProxyConfiguration, ConfigError> {
    use crate::source::guard;
    guard::check_depth(text, guard::MAX_DEPTH).map_err(|e| ConfigError::Decode {
        origin: origin.to_string(),
        line: Some(e.line),
        column: Some(e.column),
        path: String::new(),
        message: e.to_string(),
    })?;
    let wire = decode(text, origin)?;

    for (field, got, want) in [
        ("apiVersion", &wire.api_version, API_VERSION),
        ("kind", &wire.kind, KIND),
    ] {
        if got.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Decode {
                origin: origin.to_string(),
                line: None,
                column: None,
                path: field.to_string(),
                message: format!("missing required field, expected {want:?}"),
            });
        }
    }

    let (mut config, mut errors) = wire.into_config();
    config.apply_defaults();
    errors.extend(validation::validate(&config));
    if !errors.is_empty() {
        let lines = locate::FieldLines::scan(text);
        for e in &mut errors {
            e.line = lines
                .line_of(&e.field)
                .or_else(|| validation::related_field(&e.field).and_then(|r| lines.line_of(r)));
        }
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            errors,
        });
    }
    Ok(config)
}

/// The line of a field (or of its nearest enclosing key) in a config file,
/// for errors found after loading; `None` if unreadable or absent.
pub fn field_line(path: &Path, field: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    locate::FieldLines::scan(&text).line_of(field)
}

/// Reads and parses a config file; errors name the file.
pub fn load_config(path: &Path) -> Result<KubeProxyConfiguration, ConfigError> {
    let origin = path.display().to_string();
    let io = |source| ConfigError::Io {
        origin: origin.clone(),
        source,
    };
    let bytes = std::fs::File::open(path)
        .and_then(|f| crate::source::guard::read_capped(f, crate::source::guard::MAX_CONFIG_BYTES))
        .map_err(io)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    parse_config(&text, &origin)
}

/// Strictly decodes the first YAML document. Like upstream, later documents
/// are ignored (with a warning, as they were probably meant to be read).
fn decode(text: &str, origin: &str) -> Result<wire::WireConfig, ConfigError> {
    use serde::de::{Deserialize, IgnoredAny};

    // Syntax errors are found in a schema-free pass first, so they are not
    // reported against whatever field the typed pass happened to be in.
    let mut docs = serde_yaml_ng::Deserializer::from_str(text);
    let Some(first) = docs.next() else {
        return Ok(wire::WireConfig::default());
    };
    IgnoredAny::deserialize(first).map_err(|e| decode_error(origin, text, None, &e))?;
    // Only ever step once more: the document iterator does not advance past
    // a syntax error.
    if let Some(extra) = docs.next() {
        if !matches!(Option::<IgnoredAny>::deserialize(extra), Ok(None)) {
            tracing::warn!(
                origin,
                "config file has more than one YAML document; only the first is used"
            );
        }
    }

    let Some(first) = serde_yaml_ng::Deserializer::from_str(text).next() else {
        return Ok(wire::WireConfig::default());
    };
    // Option so that an empty document decodes (and then fails on the
    // missing apiVersion) instead of reporting an obscure EOF.
    let decoded: Option<wire::WireConfig> = serde_path_to_error::deserialize(first)
        .map_err(|e| decode_error(origin, text, Some(e.path()), e.inner()))?;
    Ok(decoded.unwrap_or_default())
}

fn decode_error(
    origin: &str,
    text: &str,
    at: Option<&serde_path_to_error::Path>,
    inner: &serde_yaml_ng::Error,
) -> ConfigError {
    use serde_path_to_error::Segment;

    // Build the dotted path and each of its prefixes: the YAML error text is
    // prefixed with whichever of them the parser was at, which we strip so
    // the path is printed once.
    let mut path = String::new();
    let mut prefixes = Vec::new();
    let segments: Vec<&Segment> = at.map(|p| p.iter().collect()).unwrap_or_default();
    for segment in &segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push('?');
            }
        }
        prefixes.push(path.clone());
    }

    let location = inner.location();
    let mut message = inner.to_string();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(pos) = message.find(&suffix) {
            message.replace_range(pos..pos + suffix.len(), "");
        }
    }
    for prefix in prefixes.iter().rev() {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
    }
    // The path already ends with the offending key; don't repeat it.
    if let Some(Segment::Map { key }) = segments.last() {
        let named = format!("unknown field `{key}`");
        if let Some(rest) = message.strip_prefix(&named) {
            message = format!("unknown field{rest}");
        }
    }
    let mut line = location.as_ref().map(|l| l.line());
    let column = location.as_ref().map(|l| l.column());
    // serde reports a repeated key against the whole mapping; name the key
    // in the path and try to point at its second occurrence.
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        if let Some(key) = rest.strip_suffix('`').map(str::to_string) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
            message = "duplicate field".to_string();
            if let (Some(l), Some(c)) = (line, column) {
                if let Some(found) = find_repeated_key(text, l, c, &key) {
                    line = Some(found);
                }
            }
        }
    }

    ConfigError::Decode {
        origin: origin.to_string(),
        line,
        column,
        path,
        message,
    }
}

/// Best effort for block mappings: the line (1-based) of the second `key:`
/// at the mapping's indentation, scanning from where the mapping starts.
fn find_repeated_key(text: &str, start_line: usize, column: usize, key: &str) -> Option<usize> {
    let indent = column.checked_sub(1)?;
    let is_key = |body: &str| {
        [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| body.starts_with(k.as_str()))
    };
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(start_line.checked_sub(1)?) {
        let body = if i + 1 == start_line {
            // The first key shares its line with the mapping's start.
            let (offset, _) = line.char_indices().nth(indent)?;
            &line[offset..]
        } else {
            let body = line.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let depth = line.len() - body.len();
            if depth < indent {
                return None; // left the mapping
            }
            if depth > indent {
                continue; // inside a nested value
            }
            body
        };
        if is_key(body) {
            seen += 1;
            if seen == 2 {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
