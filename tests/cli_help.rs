//! `--help`: upstream kube-proxy's wording for its flags (v1.30 `cmd/kube-proxy/app/options.go`,
//! checked by hand), grouped under headings, and an example under every subcommand.

mod common;

use std::process::Command;

fn help(args: &[&str]) -> String {
    let o = Command::new(common::BIN).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The help text printed for `flag`: from the flag's line to the next flag or heading,
/// whitespace collapsed (clap wraps long lines on a terminal).
fn flag_help(out: &str, flag: &str) -> String {
    let start = out
        .find(&format!("      {flag} "))
        .or_else(|| out.find(&format!("      {flag}[")))
        .or_else(|| out.find(&format!(", {flag} ")))
        .unwrap_or_else(|| panic!("{flag} not in --help:\n{out}"));
    let rest = &out[start..];
    let first = rest.lines().next().unwrap_or("");
    let spec_at = first.find(flag).unwrap_or(0);
    // The help follows the flag's spec after two spaces, or starts on the next line.
    let mut text = match first[spec_at..].find("  ") {
        Some(i) => first[spec_at + i..].trim().to_string(),
        None => String::new(),
    };
    for l in rest.lines().skip(1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('-') || !l.starts_with("    ") {
            break;
        }
        text.push(' ');
        text.push_str(t);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn flags_print_upstream_wording_and_defaults() {
    let out = help(&["--help"]);
    let want = [
        ("--kubeconfig", "Path to kubeconfig file with authorization information (the master location can be overridden by the master flag)."),
        ("--hostname-override", "If non-empty, will be used as the name of the Node that kube-proxy is running on. If unset, the node name is assumed to be the same as the node's hostname."),
        ("--cluster-cidr", "The CIDR range of the pods in the cluster. (For dual-stack clusters, this can be a comma-separated dual-stack pair of CIDR ranges.). When --detect-local-mode is set to ClusterCIDR, kube-proxy will consider traffic to be local if its source IP is in this range. (Otherwise it is not used.) This parameter is ignored if a config file is specified by --config."),
        ("--iptables-sync-period", "An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various re-synchronizing and cleanup operations are performed. Must be greater than 0. (default 30s)"),
        ("--conntrack-max-per-core", "Maximum number of NAT connections to track per CPU core (0 to leave the limit as-is and ignore conntrack-min). (default 32768)"),
        ("--conntrack-tcp-timeout-established", "Idle timeout for established TCP connections (0 to leave as-is) (default 24h0m0s)"),
        ("--conntrack-tcp-timeout-close-wait", "NAT timeout for TCP connections in the CLOSE_WAIT state (default 1h0m0s)"),
        ("--cleanup", "If true cleanup iptables and ipvs rules and exit."),
        ("--write-config-to", "If set, write the default configuration values to this file and exit."),
        ("--logging-format", "Sets the log format. Permitted formats: \"json\" (gated by LoggingBetaOptions), \"text\". (default \"text\")"),
    ];
    for (flag, text) in want {
        assert_eq!(flag_help(&out, flag), text, "{flag}");
    }
}

#[test]
fn flags_are_grouped_like_upstreams_add_flags() {
    let out = help(&["--help"]);
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing:\n{out}"))
    };
    // Each heading precedes its flags, in upstream's AddFlags order.
    let order = [
        "Configuration:",
        "--config <FILE>",
        "API server:",
        "--kubeconfig",
        "Node:",
        "--hostname-override",
        "iptables:",
        "--iptables-sync-period",
        "Local traffic detection:",
        "--cluster-cidr",
        "Conntrack:",
        "--conntrack-min",
        "Logging:",
        "--v <LEVEL>",
        "\nkube-proxy-rs:\n",
        "--objects",
    ];
    for w in order.windows(2) {
        assert!(
            pos(w[0]) < pos(w[1]),
            "{} should come before {}",
            w[0],
            w[1]
        );
    }
    // Deprecated and other-mode flags stay out of the help, as pflag hides deprecated ones.
    assert!(!out.contains("--healthz-port"), "{out}");
    assert!(!out.contains("--ipvs-scheduler"), "{out}");
}

#[test]
fn subcommands_end_with_an_example() {
    for sub in [
        "render", "diff", "explain", "trace", "apply", "cleanup", "daemon",
    ] {
        let out = help(&[sub, "--help"]);
        let tail = out.rsplit("Example:\n").next().unwrap();
        assert!(
            out.contains("Example:\n")
                && tail
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("kube-proxy-rs ")),
            "{sub} --help has no example:\n{out}"
        );
    }
}
