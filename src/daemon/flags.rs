//! kube-proxy's command-line flags (iptables mode) and how they combine with `--config`
//! (upstream v1.30 `Options.Complete`): without a file, flags override the defaults; with
//! a file, the file wins over every flag except logging (`-v`) and `--hostname-override`.

use crate::config::{self, FeatureGates, KubeProxyConfiguration};
use std::path::PathBuf;

/// A Go `strconv.ParseBool` value.
fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// Help headings: upstream prints one flat list in `AddFlags` order; the headings cut that
/// order into its topics.
const H_CONFIG: &str = "Configuration";
const H_API: &str = "API server";
const H_NODE: &str = "Node";
const H_IPTABLES: &str = "iptables";
const H_LOCAL: &str = "Local traffic detection";
const H_CONNTRACK: &str = "Conntrack";
const H_LOGGING: &str = "Logging";
const H_RS: &str = "kube-proxy-rs";
const H_OTHER_MODES: &str = "Other proxy modes (refused)";

/// The daemon's flags. `None` = not given on the command line. Help texts are upstream
/// kube-proxy v1.30's, with pflag's "(default ...)" suffix.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct DaemonArgs {
    /// The path to the configuration file.
    #[arg(verbatim_doc_comment, long, help_heading = H_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// If set, write the default configuration values to this file and exit.
    #[arg(verbatim_doc_comment, long = "write-config-to", help_heading = H_CONFIG, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// If true cleanup iptables and ipvs rules and exit.
    #[arg(verbatim_doc_comment, long, help_heading = H_CONFIG)]
    pub cleanup: bool,
    /// A set of key=value pairs that describe feature gates for alpha/experimental features. This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "feature-gates", help_heading = H_CONFIG, value_name = "KEY=BOOL,...")]
    pub feature_gates: Option<String>,
    /// Path to kubeconfig file with authorization information (the master location can be overridden by the master flag).
    #[arg(verbatim_doc_comment, long, help_heading = H_API, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig)
    #[arg(verbatim_doc_comment, long, help_heading = H_API, value_name = "URL")]
    pub master: Option<String>,
    /// Content type of requests sent to apiserver. (default "application/vnd.kubernetes.protobuf")
    #[arg(verbatim_doc_comment, long = "kube-api-content-type", value_name = "TYPE", help_heading = H_API)]
    pub kube_api_content_type: Option<String>,
    /// Burst to use while talking with kubernetes apiserver (default 10)
    #[arg(verbatim_doc_comment, long = "kube-api-burst", value_name = "N", help_heading = H_API)]
    pub kube_api_burst: Option<i32>,
    /// QPS to use while talking with kubernetes apiserver (default 5)
    #[arg(verbatim_doc_comment, long = "kube-api-qps", value_name = "QPS", help_heading = H_API)]
    pub kube_api_qps: Option<f32>,
    /// How often configuration from the apiserver is refreshed.  Must be greater than 0. (default 15m0s)
    #[arg(verbatim_doc_comment, long = "config-sync-period", help_heading = H_API, value_name = "DURATION")]
    pub config_sync_period: Option<String>,
    /// If non-empty, will be used as the name of the Node that kube-proxy is running on. If unset, the node name is assumed to be the same as the node's hostname.
    #[arg(verbatim_doc_comment, long = "hostname-override", help_heading = H_NODE, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Overrides kube-proxy's idea of what its node's primary IP is. Note that the name is a historical artifact, and kube-proxy does not actually bind any sockets to this IP. This parameter is ignored if a config file is specified by --config. (default 0.0.0.0)
    #[arg(verbatim_doc_comment, long = "bind-address", help_heading = H_NODE, value_name = "IP")]
    pub bind_address: Option<String>,
    /// The IP address and port for the health check server to serve on, defaulting to "0.0.0.0:10256". This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "healthz-bind-address", help_heading = H_NODE, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// The IP address and port for the metrics server to serve on, defaulting to "127.0.0.1:10249". (Set to "0.0.0.0:10249" / "[::]:10249" to bind on all interfaces.) Set empty to disable. This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "metrics-bind-address", help_heading = H_NODE, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// If true kube-proxy will treat failure to bind to a port as fatal and exit
    #[arg(verbatim_doc_comment, long = "bind-address-hard-fail", help_heading = H_NODE, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL", value_parser = go_bool)]
    pub bind_address_hard_fail: Option<bool>,
    /// If true enables profiling via web interface on /debug/pprof handler. This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "profiling", help_heading = H_NODE, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL", value_parser = go_bool)]
    pub profiling: Option<bool>,
    /// Which proxy mode to use: on Linux this can be 'iptables' (default), 'ipvs', or 'nftables'. This parameter is ignored if a config file is specified by --config. (kube-proxy-rs: only 'iptables'.)
    #[arg(verbatim_doc_comment, long = "proxy-mode", help_heading = H_NODE, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// The oom-score-adj value for kube-proxy process. Values must be within the range [-1000, 1000]. This parameter is ignored if a config file is specified by --config. (default -999)
    #[arg(verbatim_doc_comment, long = "oom-score-adj", value_name = "N", help_heading = H_NODE, allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    /// Deprecated: the port to bind the health check server. Use 0 to disable. Please use --healthz-bind-address instead.
    #[arg(verbatim_doc_comment, long = "healthz-port", value_name = "PORT", hide = true, help_heading = H_NODE)]
    pub healthz_port: Option<u16>,
    /// Deprecated: the port to bind the metrics server. Use 0 to disable. Please use --metrics-bind-address instead.
    #[arg(verbatim_doc_comment, long = "metrics-port", value_name = "PORT", hide = true, help_heading = H_NODE)]
    pub metrics_port: Option<u16>,
    /// If using the iptables or ipvs proxy mode, the bit of the fwmark space to mark packets requiring SNAT with.  Must be within the range [0, 31]. (default 14)
    #[arg(verbatim_doc_comment, long = "iptables-masquerade-bit", value_name = "BIT", help_heading = H_IPTABLES)]
    pub iptables_masquerade_bit: Option<i32>,
    /// SNAT all traffic sent via Service cluster IPs. This may be required with some CNI plugins. Only supported on Linux.
    #[arg(verbatim_doc_comment, long = "masquerade-all", help_heading = H_IPTABLES, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL", value_parser = go_bool)]
    pub masquerade_all: Option<bool>,
    /// If false, kube-proxy will disable the legacy behavior of allowing NodePort services to be accessed via localhost. (Applies only to iptables mode and IPv4; localhost NodePorts are never allowed with other proxy modes or with IPv6.) (default true)
    #[arg(verbatim_doc_comment, long = "iptables-localhost-nodeports", help_heading = H_IPTABLES, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL", value_parser = go_bool)]
    pub iptables_localhost_nodeports: Option<bool>,
    /// An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various re-synchronizing and cleanup operations are performed. Must be greater than 0. (default 30s)
    #[arg(verbatim_doc_comment, long = "iptables-sync-period", help_heading = H_IPTABLES, value_name = "DURATION")]
    pub iptables_sync_period: Option<String>,
    /// The minimum period between iptables rule resyncs (e.g. '5s', '1m', '2h22m'). A value of 0 means every Service or EndpointSlice change will result in an immediate iptables resync. (default 1s)
    #[arg(verbatim_doc_comment, long = "iptables-min-sync-period", help_heading = H_IPTABLES, value_name = "DURATION")]
    pub iptables_min_sync_period: Option<String>,
    /// Mode to use to detect local traffic. This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "detect-local-mode", help_heading = H_LOCAL, value_name = "MODE")]
    pub detect_local_mode: Option<String>,
    /// A bridge interface name. When --detect-local-mode is set to BridgeInterface, kube-proxy will consider traffic to be local if it originates from this bridge.
    #[arg(verbatim_doc_comment, long = "pod-bridge-interface", help_heading = H_LOCAL, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// An interface name prefix. When --detect-local-mode is set to InterfaceNamePrefix, kube-proxy will consider traffic to be local if it originates from any interface whose name begins with this prefix.
    #[arg(verbatim_doc_comment, long = "pod-interface-name-prefix", help_heading = H_LOCAL, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The CIDR range of the pods in the cluster. (For dual-stack clusters, this can be a comma-separated dual-stack pair of CIDR ranges.). When --detect-local-mode is set to ClusterCIDR, kube-proxy will consider traffic to be local if its source IP is in this range. (Otherwise it is not used.) This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "cluster-cidr", help_heading = H_LOCAL, value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// A list of CIDR ranges that contain valid node IPs, or alternatively, the single string 'primary'. If set to a list of CIDRs, connections to NodePort services will only be accepted on node IPs in one of the indicated ranges. If set to 'primary', NodePort services will only be accepted on the node's primary IP(s) according to the Node object. If unset, NodePort connections will be accepted on all local IPs. This parameter is ignored if a config file is specified by --config.
    #[arg(verbatim_doc_comment, long = "nodeport-addresses", help_heading = H_LOCAL, value_delimiter = ',', value_name = "CIDRS")]
    pub nodeport_addresses: Option<Vec<String>>,
    /// Maximum number of NAT connections to track per CPU core (0 to leave the limit as-is and ignore conntrack-min). (default 32768)
    #[arg(verbatim_doc_comment, long = "conntrack-max-per-core", value_name = "N", help_heading = H_CONNTRACK)]
    pub conntrack_max_per_core: Option<i32>,
    /// Minimum number of conntrack entries to allocate, regardless of conntrack-max-per-core (set conntrack-max-per-core=0 to leave the limit as-is). (default 131072)
    #[arg(verbatim_doc_comment, long = "conntrack-min", value_name = "N", help_heading = H_CONNTRACK)]
    pub conntrack_min: Option<i32>,
    /// Idle timeout for established TCP connections (0 to leave as-is) (default 24h0m0s)
    #[arg(verbatim_doc_comment, long = "conntrack-tcp-timeout-established", help_heading = H_CONNTRACK, value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<String>,
    /// NAT timeout for TCP connections in the CLOSE_WAIT state (default 1h0m0s)
    #[arg(verbatim_doc_comment, long = "conntrack-tcp-timeout-close-wait", help_heading = H_CONNTRACK, value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<String>,
    /// Enable liberal mode for tracking TCP packets by setting nf_conntrack_tcp_be_liberal to 1
    #[arg(verbatim_doc_comment, long = "conntrack-tcp-be-liberal", help_heading = H_CONNTRACK, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL", value_parser = go_bool)]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout for UNREPLIED UDP connections (0 to leave as-is)
    #[arg(verbatim_doc_comment, long = "conntrack-udp-timeout", help_heading = H_CONNTRACK, value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<String>,
    /// Idle timeout for ASSURED UDP connections (0 to leave as-is)
    #[arg(verbatim_doc_comment, long = "conntrack-udp-timeout-stream", help_heading = H_CONNTRACK, value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<String>,
    /// number for the log level verbosity (kube-proxy-rs: 0-1 info, 2-4 debug, 5+ trace; this crate only, dependencies stay at warn unless RUST_LOG says otherwise)
    #[arg(verbatim_doc_comment, short = 'v', long = "v", help_heading = H_LOGGING, value_name = "LEVEL")]
    pub verbosity: Option<u8>,
    /// Sets the log format. Permitted formats: "json" (gated by LoggingBetaOptions), "text". (default "text")
    #[arg(verbatim_doc_comment, long = "logging-format", help_heading = H_LOGGING, value_name = "FORMAT", hide_possible_values = true, value_parser = ["text", "json"])]
    pub logging_format: Option<String>,
    /// Static objects file (Services, EndpointSlices, Nodes), reloaded when it changes; replaces the API server.
    #[arg(verbatim_doc_comment, long, help_heading = H_RS, value_name = "FILE")]
    pub objects: Option<PathBuf>,
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", help_heading = H_RS, value_name = "MAJOR.MINOR", value_parser = crate::compat::EmulatedVersion::parse)]
    pub emulated_version: Option<crate::compat::EmulatedVersion>,
    /// Lock file that keeps a second daemon off this node's tables (default /run/kube-proxy-rs/netns-<network namespace inode>.lock)
    #[arg(verbatim_doc_comment, long = "lock-file", help_heading = H_RS, value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// Partial syncs restore only the chains whose rules changed since the last successful sync, shared ones such as KUBE-SERVICES included; full syncs and the sync after a failure stay upstream's (default false: upstream's payloads, byte for byte).
    #[arg(verbatim_doc_comment, long = "iptables-minimal-restore", help_heading = H_RS)]
    pub iptables_minimal_restore: bool,
    /// Render and print each payload instead of touching netfilter (no root needed).
    #[arg(verbatim_doc_comment, long = "dry-run", hide = true, help_heading = H_RS)]
    pub dry_run: bool,
    /// ipvs mode flag: refused with a clear error (kube-proxy-rs implements iptables mode only).
    #[arg(verbatim_doc_comment, long = "ipvs-scheduler", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_scheduler: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-sync-period", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_sync_period: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-min-sync-period", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_min_sync_period: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-exclude-cidrs", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_exclude_cidrs: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-strict-arp", hide = true, help_heading = H_OTHER_MODES, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub ipvs_strict_arp: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-tcp-timeout", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_tcp_timeout: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-tcpfin-timeout", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_tcpfin_timeout: Option<String>,
    /// ipvs mode flag: refused with a clear error.
    #[arg(verbatim_doc_comment, long = "ipvs-udp-timeout", hide = true, help_heading = H_OTHER_MODES)]
    pub ipvs_udp_timeout: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error(
        "--{flag} belongs to kube-proxy's ipvs mode; kube-proxy-rs implements iptables mode only"
    )]
    OtherMode { flag: &'static str },
    #[error("proxy mode {mode:?} is not supported: kube-proxy-rs implements iptables mode only")]
    Mode { mode: String },
    #[error("empty hostname-override is invalid")]
    EmptyHostname,
    #[error("--{flag} cannot be used with --objects: the objects file replaces the API server")]
    ObjectsWithApi { flag: &'static str },
    #[error("{origin}{}: clientConnection.kubeconfig is set, but --objects replaces the API server; remove one of them", line.map(|l| format!(":{l}")).unwrap_or_default())]
    ObjectsWithKubeconfig { origin: String, line: Option<usize> },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// The daemon's settings after merging flags and file.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: KubeProxyConfiguration,
    /// `--emulated-version`, else the newest supported release (provisional while
    /// `version_from_server`).
    pub compat: crate::compat::Compat,
    /// No `--emulated-version` and an API server: its `/version` decides
    /// ([`DaemonArgs::settle_version`]); the configuration is checked against that.
    pub version_from_server: bool,
    /// `--master` (not part of the configuration).
    pub master: Option<String>,
    /// `-v`, else the file's `logging.verbosity`, else 0 (logging flags beat the file).
    pub verbosity: u8,
    /// `--logging-format`, else the file's `logging.format`, else text.
    pub logging_format: LogFormat,
}

/// `--logging-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn duration(
    flag: &'static str,
    v: &Option<String>,
) -> Result<Option<std::time::Duration>, FlagError> {
    v.as_deref()
        .map(|s| {
            config::parse_duration(s).map_err(|e| FlagError::Invalid {
                flag,
                message: e.to_string(),
            })
        })
        .transpose()
}

/// `host:port` from a bind address and a deprecated port flag (0 disables).
fn address_from_port(addr: &str, port: u16) -> String {
    if port == 0 {
        return String::new();
    }
    let has_port = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.starts_with('[')));
    if has_port {
        addr.to_string()
    } else if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// The flag that sets a configuration field (the no-`--config` case).
fn flag_of(field: &str) -> Option<&'static str> {
    let base = field.split('[').next().unwrap_or(field);
    Some(match base {
        "bindAddress" => "--bind-address",
        "clusterCIDR" => "--cluster-cidr",
        "mode" => "--proxy-mode",
        "iptables.masqueradeBit" => "--iptables-masquerade-bit",
        "iptables.syncPeriod" => "--iptables-sync-period",
        "iptables.minSyncPeriod" => "--iptables-min-sync-period",
        "nodePortAddresses" => "--nodeport-addresses",
        "detectLocalMode" => "--detect-local-mode",
        "detectLocal.bridgeInterface" => "--pod-bridge-interface",
        "detectLocal.interfaceNamePrefix" => "--pod-interface-name-prefix",
        "healthzBindAddress" => "--healthz-bind-address",
        "metricsBindAddress" => "--metrics-bind-address",
        "configSyncPeriod" => "--config-sync-period",
        "conntrack.maxPerCore" => "--conntrack-max-per-core",
        "conntrack.min" => "--conntrack-min",
        "clientConnection.qps" => "--kube-api-qps",
        "clientConnection.burst" => "--kube-api-burst",
        _ => return None,
    })
}

/// Without a file, validation errors name the flag as well as the field.
fn name_flags(mut e: config::ConfigError) -> config::ConfigError {
    if let config::ConfigError::Invalid { errors, .. } = &mut e {
        for fe in errors {
            if let Some(flag) = flag_of(&fe.field) {
                fe.field = format!("{flag} ({})", fe.field);
            }
        }
    }
    e
}

impl DaemonArgs {
    fn refuse_other_modes(&self) -> Result<(), FlagError> {
        let given: [(&'static str, bool); 8] = [
            ("ipvs-scheduler", self.ipvs_scheduler.is_some()),
            ("ipvs-sync-period", self.ipvs_sync_period.is_some()),
            ("ipvs-min-sync-period", self.ipvs_min_sync_period.is_some()),
            ("ipvs-exclude-cidrs", self.ipvs_exclude_cidrs.is_some()),
            ("ipvs-strict-arp", self.ipvs_strict_arp.is_some()),
            ("ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some()),
            ("ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some()),
            ("ipvs-udp-timeout", self.ipvs_udp_timeout.is_some()),
        ];
        match given.into_iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(FlagError::OtherMode { flag }),
            None => Ok(()),
        }
    }

    /// Flags over the defaults (the no-config-file case).
    fn overlay(&self, c: &mut KubeProxyConfiguration) -> Result<(), FlagError> {
        macro_rules! set {
            ($field:expr, $v:expr) => {
                if let Some(v) = $v {
                    $field = v.clone();
                }
            };
        }
        set!(c.client_connection.kubeconfig, &self.kubeconfig);
        set!(c.bind_address, &self.bind_address);
        set!(c.bind_address_hard_fail, &self.bind_address_hard_fail);
        set!(c.cluster_cidr, &self.cluster_cidr);
        set!(c.mode, &self.proxy_mode);
        set!(c.iptables.masquerade_all, &self.masquerade_all);
        set!(c.iptables.masquerade_bit, &self.iptables_masquerade_bit);
        set!(
            c.iptables.localhost_node_ports,
            &self.iptables_localhost_nodeports
        );
        set!(c.node_port_addresses, &self.nodeport_addresses);
        set!(c.detect_local_mode, &self.detect_local_mode);
        set!(c.detect_local.bridge_interface, &self.pod_bridge_interface);
        set!(
            c.detect_local.interface_name_prefix,
            &self.pod_interface_name_prefix
        );
        set!(c.healthz_bind_address, &self.healthz_bind_address);
        set!(c.metrics_bind_address, &self.metrics_bind_address);
        set!(c.conntrack.max_per_core, &self.conntrack_max_per_core);
        set!(c.conntrack.min, &self.conntrack_min);
        set!(c.conntrack.tcp_be_liberal, &self.conntrack_tcp_be_liberal);
        set!(c.oom_score_adj, &self.oom_score_adj);
        set!(c.enable_profiling, &self.profiling);
        set!(c.client_connection.qps, &self.kube_api_qps);
        set!(c.client_connection.burst, &self.kube_api_burst);
        set!(
            c.client_connection.content_type,
            &self.kube_api_content_type
        );
        set!(
            c.iptables.sync_period,
            &duration("--iptables-sync-period", &self.iptables_sync_period)?
        );
        set!(
            c.iptables.min_sync_period,
            &duration("--iptables-min-sync-period", &self.iptables_min_sync_period)?
        );
        set!(
            c.config_sync_period,
            &duration("--config-sync-period", &self.config_sync_period)?
        );
        set!(
            c.conntrack.tcp_established_timeout,
            &duration(
                "--conntrack-tcp-timeout-established",
                &self.conntrack_tcp_timeout_established
            )?
        );
        set!(
            c.conntrack.tcp_close_wait_timeout,
            &duration(
                "--conntrack-tcp-timeout-close-wait",
                &self.conntrack_tcp_timeout_close_wait
            )?
        );
        set!(
            c.conntrack.udp_timeout,
            &duration("--conntrack-udp-timeout", &self.conntrack_udp_timeout)?
        );
        set!(
            c.conntrack.udp_stream_timeout,
            &duration(
                "--conntrack-udp-timeout-stream",
                &self.conntrack_udp_timeout_stream
            )?
        );
        if let Some(g) = &self.feature_gates {
            let parsed = FeatureGates::parse_flag(g)?;
            c.feature_gates.merge(&parsed);
        }
        c.healthz_bind_address = address_from_port(
            &c.healthz_bind_address,
            self.healthz_port.unwrap_or(config::DEFAULT_HEALTHZ_PORT),
        );
        c.metrics_bind_address = address_from_port(
            &c.metrics_bind_address,
            self.metrics_port.unwrap_or(config::DEFAULT_METRICS_PORT),
        );
        Ok(())
    }

    /// Picks the emulated release from the API server's `/version` answer
    /// (`(major, minor, gitVersion)`, or why it could not be had: then the newest,
    /// with a warning) and checks the configuration against it.
    pub fn settle_version(
        &self,
        r: &mut Resolved,
        answer: Result<(String, String, String), String>,
    ) -> Result<crate::compat::VersionChoice, FlagError> {
        use crate::compat::{EmulatedVersion, VersionChoice};
        let choice = match &answer {
            Ok((major, minor, git)) => {
                match EmulatedVersion::parse_server_version(major, minor, git) {
                    Some((a, b)) => {
                        let (version, reason) = EmulatedVersion::for_server(a, b);
                        VersionChoice {
                            version,
                            found: Some(git.clone()),
                            reason,
                        }
                    }
                    None => VersionChoice {
                        version: EmulatedVersion::NEWEST,
                        found: Some(git.clone()),
                        reason:
                            "unreadable API server version: emulating the newest supported release",
                    },
                }
            }
            Err(_) => VersionChoice {
                version: EmulatedVersion::NEWEST,
                found: None,
                reason: "API server version unknown: emulating the newest supported release",
            },
        };
        r.compat = choice.version.compat();
        r.version_from_server = false;
        crate::compat::check_config(&r.config, &r.compat, self.config.as_deref())?;
        Ok(choice)
    }

    /// Merges flags and `--config` the way upstream does, then validates.
    pub fn resolve(&self) -> Result<Resolved, FlagError> {
        self.refuse_other_modes()?;
        if self.objects.is_some() {
            // Otherwise the API settings would be silently ignored.
            for (flag, given) in [
                ("kubeconfig", self.kubeconfig.is_some()),
                ("master", self.master.is_some()),
            ] {
                if given {
                    return Err(FlagError::ObjectsWithApi { flag });
                }
            }
        }
        let mut cfg = match &self.config {
            Some(path) => config::load_config(path)?,
            None => {
                let mut c = KubeProxyConfiguration::default();
                self.overlay(&mut c)?;
                // Defaults again: an explicit 0s sync period means "default", as upstream.
                let (healthz, metrics) = (
                    c.healthz_bind_address.clone(),
                    c.metrics_bind_address.clone(),
                );
                c.apply_defaults();
                // An empty address (port 0) disables the server: keep it empty.
                if healthz.is_empty() {
                    c.healthz_bind_address.clear();
                }
                if metrics.is_empty() {
                    c.metrics_bind_address.clear();
                }
                c.validate().map_err(name_flags)?;
                c
            }
        };
        if let (Some(path), true) = (&self.config, self.objects.is_some()) {
            if !cfg.client_connection.kubeconfig.is_empty() {
                return Err(FlagError::ObjectsWithKubeconfig {
                    origin: path.display().to_string(),
                    line: config::field_line(path, "clientConnection.kubeconfig"),
                });
            }
        }
        if let Some(h) = &self.hostname_override {
            let h = h.trim();
            if h.is_empty() {
                return Err(FlagError::EmptyHostname);
            }
            // Validated like the file's hostnameOverride.
            let probe = KubeProxyConfiguration {
                hostname_override: h.to_string(),
                ..Default::default()
            };
            if let Err(config::ConfigError::Invalid { errors, .. }) = probe.validate() {
                return Err(FlagError::Invalid {
                    flag: "--hostname-override",
                    message: errors
                        .iter()
                        .map(|e| format!("Invalid value: {}: {}", e.value, e.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
            cfg.hostname_override = h.to_lowercase();
        }
        if cfg.mode != "iptables" {
            return Err(FlagError::Mode { mode: cfg.mode });
        }
        let compat = self
            .emulated_version
            .unwrap_or(crate::compat::EmulatedVersion::NEWEST)
            .compat();
        let version_from_server = self.emulated_version.is_none() && self.objects.is_none();
        if !version_from_server {
            crate::compat::check_config(&cfg, &compat, self.config.as_deref())?;
        }
        // Logging flags are copied into the configuration, file or not (upstream's
        // copyLogsFromFlags), so --write-config-to keeps them.
        if self.verbosity.is_some() || self.logging_format.is_some() {
            if !cfg.logging.is_object() {
                cfg.logging = serde_json::json!({});
            }
            if let Some(v) = self.verbosity {
                cfg.logging["verbosity"] = v.into();
            }
            if let Some(f) = &self.logging_format {
                cfg.logging["format"] = f.as_str().into();
            }
        }
        let file_verbosity = cfg.logging.get("verbosity").and_then(|v| v.as_u64());
        let verbosity = file_verbosity.map_or(0, |v| v.min(u64::from(u8::MAX)) as u8);
        let format = cfg.logging.get("format").and_then(|f| f.as_str());
        let logging_format = match format {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        Ok(Resolved {
            config: cfg,
            compat,
            version_from_server,
            master: self.master.clone(),
            verbosity,
            logging_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(clap::Parser, Debug)]
    struct T {
        #[command(flatten)]
        a: DaemonArgs,
    }

    fn parse(args: &[&str]) -> DaemonArgs {
        T::try_parse_from(std::iter::once("kube-proxy-rs").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .a
    }

    #[test]
    fn locked_gates_from_flags_are_fatal_under_the_default_1_35() {
        let e = parse(&[
            "--feature-gates=LoadBalancerIPMode=false",
            "--objects=/o.yaml",
        ])
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("featureGates.LoadBalancerIPMode"), "{e}");
        // With an API server the check waits for its version: fatal for a 1.33 server
        // or an unknown one (the newest), accepted for a 1.29 one (emulated as 1.30).
        let a = parse(&["--feature-gates=LoadBalancerIPMode=false"]);
        let mut r = a.resolve().unwrap();
        assert!(r.version_from_server);
        let server = |m: &str| Ok(("1".to_string(), m.to_string(), format!("v1.{m}.0")));
        let e = a.settle_version(&mut r.clone(), server("33")).unwrap_err();
        assert!(
            e.to_string().contains("featureGates.LoadBalancerIPMode"),
            "{e}"
        );
        assert!(a
            .settle_version(&mut r.clone(), Err("refused".into()))
            .is_err());
        let c = a.settle_version(&mut r, server("29")).unwrap();
        assert_eq!(c.version, crate::compat::EmulatedVersion::V1_30);
        assert_eq!(c.found.as_deref(), Some("v1.29.0"));
        assert_eq!(r.compat, crate::compat::Compat::v1_30());
        assert!(
            !parse(&["--emulated-version=1.35"])
                .resolve()
                .unwrap()
                .version_from_server
        );
        let r = parse(&["--emulated-version", "v1.30"]).resolve().unwrap();
        assert_eq!(r.compat, crate::compat::Compat::v1_30());
        let e = T::try_parse_from(["kube-proxy-rs", "--emulated-version=1.33"]).unwrap_err();
        assert!(
            e.to_string().contains("supported versions are 1.30, 1.35"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_defaults() {
        let r = parse(&[
            "--iptables-min-sync-period=5s",
            "--iptables-sync-period",
            "1m",
            "--masquerade-all",
            "--iptables-localhost-nodeports=false",
            "--nodeport-addresses=10.0.0.0/8,192.168.0.0/16",
            "--cluster-cidr=10.244.0.0/16",
            "--hostname-override= Node-A ",
            "--feature-gates=TopologyAwareHints=false",
            "--healthz-bind-address=127.0.0.1:10257",
            "--emulated-version=1.30",
            "-v",
            "4",
        ])
        .resolve()
        .unwrap();
        let c = &r.config;
        assert_eq!(c.iptables.min_sync_period, Duration::from_secs(5));
        assert_eq!(c.iptables.sync_period, Duration::from_secs(60));
        assert!(c.iptables.masquerade_all);
        assert!(!c.iptables.localhost_node_ports);
        assert_eq!(c.node_port_addresses, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(c.cluster_cidr, "10.244.0.0/16");
        assert_eq!(c.hostname_override, "node-a");
        assert!(!c.feature_gates.enabled("TopologyAwareHints"));
        assert_eq!(c.healthz_bind_address, "127.0.0.1:10257");
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(c.iptables.masquerade_bit, 14);
        assert_eq!(r.verbosity, 4);
    }

    #[test]
    fn config_file_wins_except_hostname_override() {
        let dir = std::env::temp_dir().join(format!("kprs-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.yaml");
        std::fs::write(
            &f,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: fromfile\niptables:\n  minSyncPeriod: 2s\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let r = parse(&[
            "--config",
            fs,
            "--iptables-min-sync-period=9s",
            "--masquerade-all",
        ])
        .resolve()
        .unwrap();
        assert_eq!(r.config.iptables.min_sync_period, Duration::from_secs(2));
        assert!(!r.config.iptables.masquerade_all);
        assert_eq!(r.config.hostname_override, "fromfile");
        let r = parse(&["--config", fs, "--hostname-override=FLAG"])
            .resolve()
            .unwrap();
        assert_eq!(r.config.hostname_override, "flag");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deprecated_ports_and_ipv6_defaults() {
        let c = parse(&["--healthz-port=0", "--metrics-port=1234"])
            .resolve()
            .unwrap()
            .config;
        assert_eq!(c.healthz_bind_address, "");
        assert_eq!(
            c.metrics_bind_address, "127.0.0.1:10249",
            "address already has a port"
        );
        let c = parse(&["--metrics-bind-address=::1", "--metrics-port=1234"])
            .resolve()
            .unwrap()
            .config;
        assert_eq!(c.metrics_bind_address, "[::1]:1234");
    }

    #[test]
    fn other_modes_are_refused() {
        let e = parse(&["--proxy-mode=ipvs"]).resolve().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: --proxy-mode (mode): Invalid value: \"ipvs\": not supported: kube-proxy-rs implements iptables mode only"
        );
        let e = parse(&["--ipvs-scheduler=rr"]).resolve().unwrap_err();
        assert!(
            e.to_string()
                .contains("--ipvs-scheduler belongs to kube-proxy's ipvs mode"),
            "{e}"
        );
        let e = parse(&["--hostname-override=  "]).resolve().unwrap_err();
        assert!(matches!(e, FlagError::EmptyHostname));
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let e = parse(&["--iptables-sync-period=soon"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().starts_with("--iptables-sync-period:"), "{e}");
        let e = parse(&[
            "--iptables-min-sync-period=1m",
            "--iptables-sync-period=30s",
        ])
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string().to_lowercase().contains("minsyncperiod"),
            "{e}"
        );
    }

    #[test]
    fn flag_values_that_reach_rules_are_validated() {
        let e = parse(&[
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface=br0 -j ACCEPT",
        ])
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "invalid configuration: --pod-bridge-interface (detectLocal.bridgeInterface): Invalid value: \"br0 -j ACCEPT\""
            ),
            "{e}"
        );
        let e = parse(&["--hostname-override=a,b"]).resolve().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--hostname-override: Invalid value: \"a,b\""),
            "{e}"
        );
    }

    #[test]
    fn objects_file_excludes_the_api_server_settings() {
        for flag in ["--kubeconfig=/k", "--master=https://x"] {
            let e = parse(&["--objects=/o.yaml", flag]).resolve().unwrap_err();
            assert!(matches!(e, FlagError::ObjectsWithApi { .. }), "{e}");
            assert!(
                e.to_string().contains("cannot be used with --objects"),
                "{e}"
            );
        }
        let dir = std::env::temp_dir().join(format!("kprs-flags-obj-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.yaml");
        std::fs::write(
            &f,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let e = parse(&["--config", fs, "--objects=/o.yaml"])
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{fs}:4: clientConnection.kubeconfig is set, but --objects replaces the API server; remove one of them")
        );
        // Either alone is fine.
        assert!(parse(&["--config", fs]).resolve().is_ok());
        assert!(parse(&["--objects=/o.yaml"]).resolve().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
