use std::time::Duration;

use super::*;

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn parse(body: &str) -> Result<KubeProxyConfiguration, ConfigError> {
    parse_config(&format!("{HEADER}{body}"), "config.yaml")
}

fn field_errors(body: &str) -> Vec<String> {
    match parse(body) {
        Err(ConfigError::Invalid { errors, .. }) => errors.iter().map(|e| e.to_string()).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn empty_config_gets_upstream_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, KubeProxyConfiguration::default());

    assert_eq!(c.bind_address, "0.0.0.0");
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
    assert!(!c.bind_address_hard_fail);
    assert!(!c.enable_profiling);
    assert_eq!(c.cluster_cidr, "");
    assert_eq!(c.hostname_override, "");
    assert_eq!(
        c.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
    assert_eq!(c.client_connection.kubeconfig, "");
    assert_eq!(c.iptables.masquerade_bit, 14);
    assert!(!c.iptables.masquerade_all);
    assert!(c.iptables.localhost_node_ports);
    assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
    assert_eq!(c.iptables.min_sync_period, Duration::from_secs(1));
    assert_eq!(c.mode, "iptables");
    assert_eq!(c.detect_local_mode, "ClusterCIDR");
    assert_eq!(c.conntrack.max_per_core, 32768);
    assert_eq!(c.conntrack.min, 131072);
    assert_eq!(
        c.conntrack.tcp_established_timeout,
        Duration::from_secs(86400)
    );
    assert_eq!(
        c.conntrack.tcp_close_wait_timeout,
        Duration::from_secs(3600)
    );
    assert!(!c.conntrack.tcp_be_liberal);
    assert_eq!(c.conntrack.udp_timeout, Duration::ZERO);
    assert_eq!(c.conntrack.udp_stream_timeout, Duration::ZERO);
    assert_eq!(c.config_sync_period, Duration::from_secs(900));
    assert!(c.node_port_addresses.is_empty());
    assert_eq!(c.oom_score_adj, -999);
    assert_eq!(c.nftables.masquerade_bit, 14);
    assert_eq!(c.ipvs.sync_period, Duration::from_secs(30));
    assert!(c.feature_gates.explicit().is_empty());
    assert!(c.feature_gates.enabled("TopologyAwareHints"));
    assert!(c.logging.is_object());
    assert!(c.validate().is_ok());
}

#[test]
fn full_realistic_config_parses() {
    let text = r#"# kubeadm-style kube-proxy config
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 10.0.0.5
bindAddressHardFail: true
healthzBindAddress: 10.0.0.5
metricsBindAddress: 0.0.0.0:9100
enableProfiling: true
clientConnection:
  acceptContentTypes: ""
  burst: 20
  contentType: application/json
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 7.5
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 10m0s
conntrack:
  maxPerCore: 0
  min: null
  tcpBeLiberal: true
  tcpCloseWaitTimeout: 0s
  tcpEstablishedTimeout: 12h
  udpStreamTimeout: 2m
  udpTimeout: 30s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: veth
detectLocalMode: InterfaceNamePrefix
featureGates:
  ServiceTrafficDistribution: true
  TopologyAwareHints: false
hostnameOverride: Node-1.Example
iptables:
  localhostNodePorts: false
  masqueradeAll: true
  masqueradeBit: 0
  minSyncPeriod: 500ms
  syncPeriod: 1m30s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 2
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses:
  - 10.0.0.0/8
  - fd00::/64
oomScoreAdj: 0
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;
    let c = parse_config(text, "kube-proxy.yaml").unwrap();

    assert_eq!(c.bind_address, "10.0.0.5");
    assert!(c.bind_address_hard_fail);
    assert_eq!(c.healthz_bind_address, "10.0.0.5:10256", "port appended");
    assert_eq!(c.metrics_bind_address, "0.0.0.0:9100");
    assert!(c.enable_profiling);
    assert_eq!(c.client_connection.burst, 20);
    assert_eq!(c.client_connection.qps, 7.5);
    assert_eq!(c.client_connection.content_type, "application/json");
    assert_eq!(
        c.client_connection.kubeconfig,
        "/var/lib/kube-proxy/kubeconfig.conf"
    );
    assert_eq!(c.cluster_cidr, "10.244.0.0/16,fd00:10:244::/56");
    assert_eq!(c.config_sync_period, Duration::from_secs(600));
    // Pointer fields keep explicit zeros; null means "use the default".
    assert_eq!(c.conntrack.max_per_core, 0);
    assert_eq!(c.conntrack.min, 131072);
    assert_eq!(c.conntrack.tcp_close_wait_timeout, Duration::ZERO);
    assert_eq!(
        c.conntrack.tcp_established_timeout,
        Duration::from_secs(12 * 3600)
    );
    assert!(c.conntrack.tcp_be_liberal);
    assert_eq!(c.conntrack.udp_timeout, Duration::from_secs(30));
    assert_eq!(c.conntrack.udp_stream_timeout, Duration::from_secs(120));
    assert_eq!(c.detect_local_mode, "InterfaceNamePrefix");
    assert_eq!(c.detect_local.interface_name_prefix, "veth");
    assert!(c.feature_gates.enabled("ServiceTrafficDistribution"));
    assert!(!c.feature_gates.enabled("TopologyAwareHints"));
    assert_eq!(c.hostname_override, "Node-1.Example");
    assert!(!c.iptables.localhost_node_ports);
    assert!(c.iptables.masquerade_all);
    assert_eq!(c.iptables.masquerade_bit, 0);
    assert_eq!(c.iptables.min_sync_period, Duration::from_millis(500));
    assert_eq!(c.iptables.sync_period, Duration::from_secs(90));
    assert_eq!(
        c.ipvs.sync_period,
        Duration::from_secs(30),
        "0s is defaulted"
    );
    assert_eq!(c.nftables.masquerade_bit, 14);
    assert_eq!(c.logging["verbosity"], 2);
    assert_eq!(c.mode, "iptables");
    assert_eq!(c.node_port_addresses, vec!["10.0.0.0/8", "fd00::/64"]);
    assert_eq!(c.oom_score_adj, 0);
}

#[test]
fn unknown_field_names_field_line_and_column() {
    let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clusterCIDR: 10.0.0.0/8
mode: iptables
iptables:
  masqueradeBitt: 14
";
    let err = parse_config(text, "config.yaml").unwrap_err();
    match &err {
        ConfigError::Decode {
            line, column, path, ..
        } => {
            assert_eq!((*line, *column), (Some(7), Some(3)));
            assert_eq!(path, "iptables.masqueradeBitt");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "config.yaml:7:3: iptables.masqueradeBitt: unknown field, expected one of `masqueradeBit`,"
        ),
        "{msg}"
    );

    let msg = parse("bogus: 1\n").unwrap_err().to_string();
    assert!(
        msg.starts_with("config.yaml:3:1: bogus: unknown field"),
        "{msg}"
    );
    // Case matters, as in upstream's strict decoding.
    let msg = parse("BindAddress: 1.2.3.4\n").unwrap_err().to_string();
    assert!(msg.contains("BindAddress: unknown field"), "{msg}");
}

#[test]
fn type_errors_carry_path_and_position() {
    let msg = parse("iptables:\n  masqueradeBit: fourteen\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "config.yaml:4:18: iptables.masqueradeBit: invalid type: string \"fourteen\", expected i32"
    );
    let msg = parse("nodePortAddresses:\n  - 10.0.0.0/8\n  - {a: 1}\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("config.yaml:5:5: nodePortAddresses[1]: invalid type: map"),
        "{msg}"
    );
    let msg = parse("iptables: 3\n").unwrap_err().to_string();
    assert!(
        msg.ends_with("expected struct KubeProxyIPTablesConfiguration"),
        "{msg}"
    );
}

#[test]
fn duration_fields_use_go_syntax() {
    let msg = parse("iptables:\n  syncPeriod: 30\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("config.yaml:4:15: iptables.syncPeriod: invalid type: integer `30`"),
        "{msg}"
    );
    let msg = parse("configSyncPeriod: 5 minutes\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("configSyncPeriod: unknown unit"), "{msg}");
    // Upstream passes null to time.ParseDuration as "".
    let msg = parse("iptables:\n  syncPeriod:\n").unwrap_err().to_string();
    assert_eq!(
        msg,
        "config.yaml:4:14: iptables.syncPeriod: invalid duration \"\""
    );
}

#[test]
fn syntax_errors_have_position_but_no_field() {
    let err = parse("mode: a: b\n").unwrap_err();
    let ConfigError::Decode { line, path, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*line, Some(3));
    assert_eq!(path, "");
    assert!(err.to_string().starts_with("config.yaml:3:"), "{err}");
}

#[test]
fn duplicate_keys_are_rejected_at_the_repeat() {
    let msg = parse("mode: iptables\niptables:\n  syncPeriod: 1s\n  syncPeriod: 2s\n")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "config.yaml:6:3: iptables.syncPeriod: duplicate field");
    // Blank lines, comments and nested blocks in between don't matter.
    let msg = parse("mode: ipvs\n\n# again:\nipvs:\n  excludeCIDRs:\n  - 10.0.0.0/8\nmode: ipvs\n")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "config.yaml:9:1: mode: duplicate field");
}

#[test]
fn api_version_and_kind_are_checked() {
    let msg = parse_config(
        "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
        "c.yaml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        msg,
        "c.yaml:1:13: apiVersion: unsupported apiVersion \"kubeproxy.config.k8s.io/v1beta1\", expected \"kubeproxy.config.k8s.io/v1alpha1\""
    );
    let msg = parse_config(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
        "c.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.starts_with("c.yaml:2:7: kind: unsupported kind \"KubeletConfiguration\""),
        "{msg}"
    );

    let msg = parse_config("", "c.yaml").unwrap_err().to_string();
    assert_eq!(
        msg,
        "c.yaml: apiVersion: missing required field, expected \"kubeproxy.config.k8s.io/v1alpha1\""
    );
    let msg = parse_config("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n", "c.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("c.yaml: kind: missing required field"),
        "{msg}"
    );
}

#[test]
fn bad_masquerade_bit_message() {
    assert_eq!(
        field_errors("iptables:\n  masqueradeBit: 40\n"),
        vec!["iptables.masqueradeBit: Invalid value: 40: must be within the range [0, 31]"]
    );
    assert_eq!(
        field_errors("iptables:\n  masqueradeBit: -1\n"),
        vec!["iptables.masqueradeBit: Invalid value: -1: must be within the range [0, 31]"]
    );
    let msg = parse("iptables:\n  masqueradeBit: 40\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "config.yaml:4: invalid configuration: iptables.masqueradeBit: Invalid value: 40: must be within the range [0, 31]"
    );
}

#[test]
fn every_validation_error_is_reported_together() {
    let errs = field_errors(
        "bindAddress: not-an-ip
healthzBindAddress: 1.2.3.4:99999
clusterCIDR: 10.0.0.0/33
mode: kernelspace
detectLocalMode: BridgeInterface
nodePortAddresses: [10.0.0.0/8, 1.2.3.4]
iptables:
  masqueradeBit: 32
  syncPeriod: 1s
  minSyncPeriod: 5s
conntrack:
  maxPerCore: -1
  udpTimeout: -5s
clientConnection:
  burst: -3
portRange: 20-10
showHiddenMetricsForVersion: \"1.28\"
",
    );
    let expected = [
        "conntrack.udpTimeout: Invalid value: -5s: must be greater than or equal to 0",
        "iptables.masqueradeBit: Invalid value: 32: must be within the range [0, 31]",
        "iptables.syncPeriod: Invalid value: 1s: must be greater than or equal to iptables.minSyncPeriod (5s)",
        "conntrack.maxPerCore: Invalid value: -1: must be greater than or equal to 0",
        "mode: Invalid value: \"kernelspace\": must be iptables, ipvs or blank (blank means the best-available proxy [currently iptables])",
        "clientConnection.burst: Invalid value: -3: must be greater than or equal to 0",
        "bindAddress: Invalid value: \"not-an-ip\": not a valid textual representation of an IP address",
        "healthzBindAddress: Invalid value: \"99999\": must be a valid port",
        "clusterCIDR: Invalid value: \"10.0.0.0/33\": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
        "portRange: Invalid value: \"20-10\": must be a valid port range (e.g. 300-2000)",
        "nodePortAddresses[1]: Invalid value: \"1.2.3.4\": must be a valid CIDR",
        "showHiddenMetricsForVersion: Invalid value: \"1.28\": must be omitted or have the value '1.29'. Only the previous minor version is allowed",
        "detectLocal.bridgeInterface: Invalid value: \"\": must not be empty when detectLocalMode is BridgeInterface",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn negative_durations_are_validation_errors() {
    assert_eq!(
        field_errors(
            "iptables:\n  syncPeriod: -30s\n  minSyncPeriod: -1s\nconfigSyncPeriod: -1m\n"
        ),
        vec![
            "iptables.syncPeriod: Invalid value: -30s: must be greater than 0",
            "iptables.minSyncPeriod: Invalid value: -1s: must be greater than or equal to 0",
            "configSyncPeriod: Invalid value: -1m0s: must be greater than 0",
        ]
    );
    // Settings of a proxy mode that is not in use are not validated upstream.
    assert!(parse("ipvs:\n  tcpTimeout: -1s\n").is_ok());
    assert!(!field_errors("mode: ipvs\nipvs:\n  tcpTimeout: -1s\n").is_empty());
}

#[test]
fn zero_values_of_non_pointer_fields_are_defaulted() {
    let c = parse(
        "bindAddress: \"\"\niptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\nconfigSyncPeriod: \"0\"\nclientConnection:\n  qps: 0\n  burst: 0\n",
    )
    .unwrap();
    assert_eq!(c.bind_address, "0.0.0.0");
    assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
    assert_eq!(c.iptables.min_sync_period, Duration::from_secs(1));
    assert_eq!(c.config_sync_period, Duration::from_secs(900));
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
}

#[test]
fn explicit_values_of_pointer_fields_are_kept() {
    let c = parse(
        "oomScoreAdj: 0\niptables:\n  masqueradeBit: 0\n  localhostNodePorts: false\nconntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n",
    )
    .unwrap();
    assert_eq!(c.oom_score_adj, 0);
    assert_eq!(c.iptables.masquerade_bit, 0);
    assert!(!c.iptables.localhost_node_ports);
    assert_eq!(c.conntrack.max_per_core, 0);
    assert_eq!(c.conntrack.min, 0);
    assert_eq!(c.conntrack.tcp_established_timeout, Duration::ZERO);
    // ...while null means unset.
    let c = parse("oomScoreAdj: null\niptables:\n  localhostNodePorts: ~\n").unwrap();
    assert_eq!(c.oom_score_adj, -999);
    assert!(c.iptables.localhost_node_ports);
}

#[test]
fn null_sections_and_values_mean_zero_values() {
    let c = parse(
        "iptables:\nconntrack: null\nhostnameOverride: ~\nnodePortAddresses:\nfeatureGates:\n",
    )
    .unwrap();
    assert_eq!(c.iptables.masquerade_bit, 14);
    assert_eq!(c.conntrack.min, 131072);
    assert_eq!(c.hostname_override, "");
    assert!(c.node_port_addresses.is_empty());
}

#[test]
fn yaml_1_1_booleans_are_understood() {
    let c = parse("iptables:\n  masqueradeAll: yes\n  localhostNodePorts: off\nfeatureGates:\n  NFTablesProxyMode: on\n").unwrap();
    assert!(c.iptables.masquerade_all);
    assert!(!c.iptables.localhost_node_ports);
    assert!(c.feature_gates.enabled("NFTablesProxyMode"));
    assert!(parse("iptables:\n  masqueradeAll: 1\n").is_err());
}

#[test]
fn ipv6_bind_address_switches_server_defaults() {
    let c = parse("bindAddress: \"fd00::5\"\n").unwrap();
    assert_eq!(c.healthz_bind_address, "[::]:10256");
    assert_eq!(c.metrics_bind_address, "[::1]:10249");
    let c = parse("bindAddress: \"::\"\nhealthzBindAddress: \"fd00::5\"\n").unwrap();
    assert_eq!(c.healthz_bind_address, "[fd00::5]:10256");
}

#[test]
fn nftables_mode_needs_its_feature_gate() {
    let errs = field_errors("mode: nftables\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("mode: Invalid value: \"nftables\""),
        "{errs:?}"
    );
    // Valid upstream with the gate, but not implemented here.
    assert_eq!(
        field_errors("mode: nftables\nfeatureGates:\n  NFTablesProxyMode: true\n"),
        vec!["mode: Invalid value: \"nftables\": not supported: kube-proxy-rs implements iptables mode only"]
    );
}

#[test]
fn detect_local_mode_must_be_known() {
    assert_eq!(
        field_errors("detectLocalMode: PodCIDR\n"),
        vec![
            "detectLocalMode: Unsupported value: \"PodCIDR\": supported values: \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\", \"\""
        ]
    );
    let c =
        parse("detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n").unwrap();
    assert_eq!(c.detect_local.bridge_interface, "cbr0");
}

#[test]
fn logging_block_is_opaque_but_checked_lightly() {
    let c =
        parse("logging:\n  format: json\n  vmodule: [{filePattern: x, verbosity: 3}]\n").unwrap();
    assert_eq!(c.logging["format"], "json");
    let msg = parse("logging: 3\n").unwrap_err().to_string();
    assert!(
        msg.starts_with("config.yaml:3:10: logging: invalid type"),
        "{msg}"
    );
    assert_eq!(
        field_errors("logging:\n  format: xml\n"),
        vec!["logging.format: Invalid value: \"xml\": Unsupported log format"]
    );
}

#[test]
fn validate_and_apply_defaults_work_on_built_configs() {
    let mut c = KubeProxyConfiguration {
        mode: String::new(),
        bind_address: "::1".to_string(),
        healthz_bind_address: String::new(),
        metrics_bind_address: String::new(),
        ..KubeProxyConfiguration::default()
    };
    c.iptables.sync_period = Duration::ZERO;
    c.apply_defaults();
    assert_eq!(c.mode, "iptables");
    assert_eq!(c.healthz_bind_address, "[::]:10256");
    assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
    let once = c.clone();
    c.apply_defaults();
    assert_eq!(c, once, "idempotent");
    assert!(c.validate().is_ok());

    // Disabling a server after defaulting is allowed.
    c.healthz_bind_address.clear();
    c.metrics_bind_address.clear();
    assert!(c.validate().is_ok());

    c.iptables.masquerade_bit = 99;
    c.config_sync_period = Duration::ZERO;
    let err = c.validate().unwrap_err();
    assert_eq!(err.field_errors().len(), 2);
    assert!(
        err.to_string()
            .starts_with("invalid configuration: iptables.masqueradeBit"),
        "{err}"
    );
}

#[test]
fn to_yaml_round_trips() {
    let mut c = parse("bindAddress: 10.1.2.3\nclusterCIDR: 10.0.0.0/8\niptables:\n  minSyncPeriod: 250ms\nconntrack:\n  udpTimeout: 1m30s\nfeatureGates:\n  TopologyAwareHints: false\n").unwrap();
    c.logging = serde_json::json!({"verbosity": 3});
    let yaml = c.to_yaml();
    assert!(yaml.starts_with(HEADER), "{yaml}");
    assert!(yaml.contains("udpTimeout: 1m30s"), "{yaml}");
    assert_eq!(parse_config(&yaml, "out.yaml").unwrap(), c);
    let d = KubeProxyConfiguration::default();
    assert_eq!(parse_config(&d.to_yaml(), "out.yaml").unwrap(), d);
}

#[test]
fn load_config_reads_files_and_names_them() {
    let dir =
        std::env::temp_dir().join(format!("kube-proxy-rs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kube-proxy.yaml");
    std::fs::write(&path, format!("{HEADER}clusterCIDR: 10.0.0.0/8\n")).unwrap();
    assert_eq!(load_config(&path).unwrap().cluster_cidr, "10.0.0.0/8");

    std::fs::write(&path, format!("{HEADER}\niptables:\n  masqueradeBit: 32\n")).unwrap();
    let msg = load_config(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:5: invalid configuration: iptables.masqueradeBit: Invalid value: 32",
            path.display()
        )),
        "{msg}"
    );

    std::fs::write(&path, format!("{HEADER}iptables:\n  bogus: 1\n")).unwrap();
    let msg = load_config(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:4:3: iptables.bogus: unknown field",
            path.display()
        )),
        "{msg}"
    );

    let missing = dir.join("nope.yaml");
    let err = load_config(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn only_the_first_yaml_document_is_used() {
    let c = parse_config(
        &format!("---\n{HEADER}clusterCIDR: 10.1.0.0/16\n---\nmode: bogus\n"),
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.cluster_cidr, "10.1.0.0/16");
}

fn invalid(body: &str) -> Vec<FieldError> {
    match parse(body) {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn validation_errors_carry_the_fields_line() {
    let errs = invalid(
        "clusterCIDR: 10.0.0.0/33
iptables:
  masqueradeAll: true
  masqueradeBit: 32
nodePortAddresses:
- 10.0.0.0/8
- 1.2.3.4
detectLocalMode: BridgeInterface
",
    );
    let got: Vec<(String, Option<usize>)> =
        errs.iter().map(|e| (e.field.clone(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("iptables.masqueradeBit".to_string(), Some(6)),
            ("clusterCIDR".to_string(), Some(3)),
            ("nodePortAddresses[1]".to_string(), Some(9)),
            // Absent: points at the setting that requires it.
            ("detectLocal.bridgeInterface".to_string(), Some(10)),
        ]
    );
    let msg = parse("mode: ipvs\n").unwrap_err().to_string();
    assert_eq!(
        msg,
        "config.yaml:3: invalid configuration: mode: Invalid value: \"ipvs\": not supported: kube-proxy-rs implements iptables mode only"
    );
    // Several errors: each names its own line.
    let msg = parse("iptables:\n  masqueradeBit: 32\nclusterCIDR: x\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "config.yaml:4: invalid configuration: iptables.masqueradeBit: Invalid value: 32: must be within the range [0, 31]; config.yaml:5: clusterCIDR: Invalid value: \"x\": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
    );
}

#[test]
fn interface_names_are_validated_like_linux() {
    let injected = "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: \"br0 -j RETURN\\n-A PREROUTING -s 6.6.6.6 -j ACCEPT\"\n";
    let errs = invalid(injected);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "detectLocal.bridgeInterface");
    assert_eq!(errs[0].line, Some(5));
    let msg = parse(injected).unwrap_err().to_string();
    assert!(
        msg.starts_with("config.yaml:5: invalid configuration: detectLocal.bridgeInterface: Invalid value: \"br0 -j RETURN\\n-A PREROUTING"),
        "{msg}"
    );

    let bridge = |name: &str| {
        parse(&format!(
            "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: {}\n",
            serde_json::to_string(name).unwrap()
        ))
    };
    let prefix = |name: &str| {
        parse(&format!(
            "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: {}\n",
            serde_json::to_string(name).unwrap()
        ))
    };
    for ok in [
        "cni0",
        "br-0123456789ab",
        "eth0.100",
        "flannel.1",
        "lxc_health",
        "a-15-byte-name0",
    ] {
        assert!(bridge(ok).is_ok(), "{ok}");
    }
    for bad in [
        "sixteen-bytes-00",
        ".",
        "..",
        "br/0",
        "br:0",
        "br 0",
        "br\t0",
        "br\"0",
        "br\\0",
        "br\u{1}",
        "br\u{a0}",
        "br\n-A PREROUTING",
    ] {
        let e = bridge(bad).unwrap_err();
        assert_eq!(
            e.field_errors()[0].field,
            "detectLocal.bridgeInterface",
            "{bad:?}"
        );
    }
    for ok in ["veth", "cali", "a-14-byte-pref", "."] {
        assert!(prefix(ok).is_ok(), "{ok}");
    }
    for bad in ["a-15-byte-prefx", "ve th", "ve/th", "ve:th"] {
        let e = prefix(bad).unwrap_err();
        assert_eq!(
            e.field_errors()[0].field,
            "detectLocal.interfaceNamePrefix",
            "{bad:?}"
        );
    }
    // Only checked when the mode puts the value into rules (as upstream).
    assert!(parse("detectLocal:\n  bridgeInterface: \"a b\"\n").is_ok());
}

#[test]
fn hostname_override_must_be_a_node_name() {
    assert_eq!(
        parse("hostnameOverride: Node-A.example\n")
            .unwrap()
            .hostname_override,
        "Node-A.example"
    );
    for bad in [
        "node,metadata.namespace=x",
        "node_1",
        "-node",
        "node.",
        "a b",
    ] {
        let errs = invalid(&format!("hostnameOverride: {bad:?}\n"));
        assert_eq!(errs[0].field, "hostnameOverride", "{bad}");
        assert_eq!(errs[0].line, Some(3));
    }
}

#[test]
fn deeply_nested_config_is_refused_before_parsing() {
    let body = format!(
        "logging:\n  options: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let msg = parse(&body).unwrap_err().to_string();
    assert!(
        msg.starts_with("config.yaml:4:74: nesting deeper than 64 levels"),
        "{msg}"
    );
}

#[test]
fn oversized_config_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("kprs-config-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.yaml");
    let mut text = HEADER.to_string();
    text.push_str(&"# padding\n".repeat(120_000));
    std::fs::write(&path, text).unwrap();
    let err = load_config(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    let full = format!("{:#}", anyhow::Error::from(err));
    assert!(full.contains("larger than the 1 MiB limit"), "{full}");
    std::fs::remove_dir_all(&dir).unwrap();
}
