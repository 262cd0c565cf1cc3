//! `--write-config-to`: the file written is a KubeProxyConfiguration that the daemon reads
//! back (`--config`) to the same configuration, as upstream's `writeConfigFile` output is.

mod common;

use kube_proxy_rs::config;
use kube_proxy_rs::daemon::flags::DaemonArgs;
use std::path::Path;
use std::process::Command;

#[derive(clap::Parser, Debug)]
struct T {
    #[command(flatten)]
    a: DaemonArgs,
}

fn resolve(args: &[&str]) -> kube_proxy_rs::daemon::flags::Resolved {
    use clap::Parser;
    T::try_parse_from(std::iter::once("kube-proxy-rs").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .a
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn write(args: &[&str], to: &Path) {
    let o = Command::new(common::BIN)
        .args(args)
        .arg("--write-config-to")
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn written_config_reads_back_to_the_same_configuration() {
    let dir = std::env::temp_dir().join(format!("kprs-writecfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.yaml"), dir.join("b.yaml"));
    let flags = [
        "--hostname-override=node-a",
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--iptables-sync-period=45s",
        "--iptables-min-sync-period=2s",
        "--masquerade-all",
        "--nodeport-addresses=10.0.0.0/8",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-close-wait=30m",
        "--feature-gates=PreferSameTrafficDistribution=false",
        "--metrics-bind-address=0.0.0.0:10249",
        "--kubeconfig=/var/lib/kube-proxy/kubeconfig.conf",
        "-v",
        "3",
        "--logging-format=json",
    ];
    let from_flags = resolve(&flags);
    write(&flags, &a);
    let text = std::fs::read_to_string(&a).unwrap();
    assert!(
        text.starts_with("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"),
        "{text}"
    );
    let read_back = resolve(&["--config", a.to_str().unwrap()]);
    // The parsed structs, field by field (PartialEq over the whole configuration).
    assert_eq!(read_back.config, from_flags.config);
    assert_eq!(read_back.verbosity, 3);
    assert_eq!(
        read_back.logging_format,
        kube_proxy_rs::daemon::flags::LogFormat::Json
    );
    // And the loader agrees with the daemon's resolution.
    assert_eq!(config::load_config(&a).unwrap(), from_flags.config);
    // Writing again from the written file is a fixed point.
    write(&["--config", a.to_str().unwrap()], &b);
    assert_eq!(std::fs::read_to_string(&b).unwrap(), text);
    let _ = std::fs::remove_dir_all(&dir);
}
