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

/// The daemon's flags. `None` = not given on the command line.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct DaemonArgs {
    /// KubeProxyConfiguration file; wins over the other flags (except -v, --hostname-override).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the resulting configuration to this file and exit.
    #[arg(long = "write-config-to")]
    pub write_config_to: Option<PathBuf>,
    /// Static objects file (Services, EndpointSlices, Nodes), reloaded when it changes;
    /// replaces the API server.
    #[arg(long)]
    pub objects: Option<PathBuf>,
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = crate::compat::EmulatedVersion::parse)]
    pub emulated_version: Option<crate::compat::EmulatedVersion>,
    /// API server address (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
    #[arg(long = "bind-address")]
    pub bind_address: Option<String>,
    #[arg(long = "bind-address-hard-fail", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = go_bool)]
    pub bind_address_hard_fail: Option<bool>,
    #[arg(long = "cluster-cidr")]
    pub cluster_cidr: Option<String>,
    /// Only `iptables` is implemented.
    #[arg(long = "proxy-mode")]
    pub proxy_mode: Option<String>,
    #[arg(long = "masquerade-all", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = go_bool)]
    pub masquerade_all: Option<bool>,
    #[arg(long = "iptables-masquerade-bit")]
    pub iptables_masquerade_bit: Option<i32>,
    #[arg(long = "iptables-sync-period")]
    pub iptables_sync_period: Option<String>,
    #[arg(long = "iptables-min-sync-period")]
    pub iptables_min_sync_period: Option<String>,
    #[arg(long = "iptables-localhost-nodeports", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = go_bool)]
    pub iptables_localhost_nodeports: Option<bool>,
    /// Comma-separated CIDRs (repeatable).
    #[arg(long = "nodeport-addresses", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    #[arg(long = "detect-local-mode")]
    pub detect_local_mode: Option<String>,
    #[arg(long = "pod-bridge-interface")]
    pub pod_bridge_interface: Option<String>,
    #[arg(long = "pod-interface-name-prefix")]
    pub pod_interface_name_prefix: Option<String>,
    #[arg(long = "healthz-bind-address")]
    pub healthz_bind_address: Option<String>,
    #[arg(long = "metrics-bind-address")]
    pub metrics_bind_address: Option<String>,
    /// Deprecated; only without --config. 0 disables the server.
    #[arg(long = "healthz-port", hide = true)]
    pub healthz_port: Option<u16>,
    /// Deprecated; only without --config. 0 disables the server.
    #[arg(long = "metrics-port", hide = true)]
    pub metrics_port: Option<u16>,
    #[arg(long = "config-sync-period")]
    pub config_sync_period: Option<String>,
    #[arg(long = "conntrack-max-per-core")]
    pub conntrack_max_per_core: Option<i32>,
    #[arg(long = "conntrack-min")]
    pub conntrack_min: Option<i32>,
    #[arg(long = "conntrack-tcp-timeout-established")]
    pub conntrack_tcp_timeout_established: Option<String>,
    #[arg(long = "conntrack-tcp-timeout-close-wait")]
    pub conntrack_tcp_timeout_close_wait: Option<String>,
    #[arg(long = "conntrack-tcp-be-liberal", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = go_bool)]
    pub conntrack_tcp_be_liberal: Option<bool>,
    #[arg(long = "conntrack-udp-timeout")]
    pub conntrack_udp_timeout: Option<String>,
    #[arg(long = "conntrack-udp-timeout-stream")]
    pub conntrack_udp_timeout_stream: Option<String>,
    /// `Name=bool,...`
    #[arg(long = "feature-gates")]
    pub feature_gates: Option<String>,
    #[arg(long = "oom-score-adj")]
    pub oom_score_adj: Option<i32>,
    #[arg(long = "profiling", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_parser = go_bool)]
    pub profiling: Option<bool>,
    #[arg(long = "kube-api-qps")]
    pub kube_api_qps: Option<f32>,
    #[arg(long = "kube-api-burst")]
    pub kube_api_burst: Option<i32>,
    #[arg(long = "kube-api-content-type")]
    pub kube_api_content_type: Option<String>,
    /// Render and print each payload instead of touching netfilter (no root needed).
    #[arg(long = "dry-run", hide = true)]
    pub dry_run: bool,
    /// Remove every rule kube-proxy created, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Lock file that keeps a second daemon off this node's tables
    /// [default: /run/kube-proxy-rs/netns-<network namespace inode>.lock].
    #[arg(long = "lock-file", value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// Log verbosity (klog levels: 0-1 info, 2-4 debug, 5+ trace).
    #[arg(short = 'v', long = "v")]
    pub verbosity: Option<u8>,
    /// Flags of kube-proxy's other modes: accepted only to be refused with a clear error.
    #[arg(long = "ipvs-scheduler", hide = true)]
    pub ipvs_scheduler: Option<String>,
    #[arg(long = "ipvs-sync-period", hide = true)]
    pub ipvs_sync_period: Option<String>,
    #[arg(long = "ipvs-min-sync-period", hide = true)]
    pub ipvs_min_sync_period: Option<String>,
    #[arg(long = "ipvs-exclude-cidrs", hide = true)]
    pub ipvs_exclude_cidrs: Option<String>,
    #[arg(long = "ipvs-strict-arp", hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub ipvs_strict_arp: Option<String>,
    #[arg(long = "ipvs-tcp-timeout", hide = true)]
    pub ipvs_tcp_timeout: Option<String>,
    #[arg(long = "ipvs-tcpfin-timeout", hide = true)]
    pub ipvs_tcpfin_timeout: Option<String>,
    #[arg(long = "ipvs-udp-timeout", hide = true)]
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
    /// `--emulated-version`, else the newest supported release.
    pub compat: crate::compat::Compat,
    /// `--master` (not part of the configuration).
    pub master: Option<String>,
    pub verbosity: u8,
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
        crate::compat::check_config(&cfg, &compat, self.config.as_deref())?;
        Ok(Resolved {
            config: cfg,
            compat,
            master: self.master.clone(),
            verbosity: self.verbosity.unwrap_or(0),
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
        let e = parse(&["--feature-gates=LoadBalancerIPMode=false"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("featureGates.LoadBalancerIPMode"), "{e}");
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
