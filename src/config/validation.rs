//! Validation rules of kube-proxy v1.30 (Linux). Every rule runs and every
//! failure is collected, so a user fixes a config in one round trip.

use super::duration::format_duration;
use super::net::{is_ipv4_like, parse_cidr_sloppy, parse_ip_sloppy, split_host_port};
use super::{FieldError, KubeProxyConfiguration};

/// Only the previous minor release may be named (v1.30 → "1.29").
const SHOW_HIDDEN_METRICS_VERSION: &str = "1.29";

const DETECT_LOCAL_MODES: &[&str] = &[
    "ClusterCIDR",
    "NodeCIDR",
    "BridgeInterface",
    "InterfaceNamePrefix",
    "",
];

pub(crate) fn validate(c: &KubeProxyConfiguration) -> Vec<FieldError> {
    let mut errs = Vec::new();

    check_masquerade_bit(
        &mut errs,
        "iptables.masqueradeBit",
        c.iptables.masquerade_bit,
    );
    check_sync_periods(
        &mut errs,
        "iptables",
        c.iptables.sync_period,
        c.iptables.min_sync_period,
    );
    match c.mode.as_str() {
        "ipvs" => {
            check_sync_periods(
                &mut errs,
                "ipvs",
                c.ipvs.sync_period,
                c.ipvs.min_sync_period,
            );
            check_cidr_list(&mut errs, "ipvs.excludeCIDRs", &c.ipvs.exclude_cidrs);
        }
        "nftables" => {
            check_masquerade_bit(
                &mut errs,
                "nftables.masqueradeBit",
                c.nftables.masquerade_bit,
            );
            check_sync_periods(
                &mut errs,
                "nftables",
                c.nftables.sync_period,
                c.nftables.min_sync_period,
            );
        }
        _ => {}
    }

    // Negative maxPerCore/min would be written to sysctls as garbage.
    for (field, v) in [
        ("conntrack.maxPerCore", c.conntrack.max_per_core),
        ("conntrack.min", c.conntrack.min),
    ] {
        if v < 0 {
            errs.push(FieldError::invalid(
                field,
                v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }

    check_mode(&mut errs, c);

    if c.client_connection.burst < 0 {
        errs.push(FieldError::invalid(
            "clientConnection.burst",
            c.client_connection.burst.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    // Go cannot even decode a non-finite float32; reject instead of feeding
    // NaN into a rate limiter.
    if !c.client_connection.qps.is_finite() {
        errs.push(FieldError::invalid(
            "clientConnection.qps",
            c.client_connection.qps.to_string(),
            "must be a finite number",
        ));
    }

    if c.config_sync_period.is_zero() {
        errs.push(FieldError::invalid(
            "configSyncPeriod",
            format_duration(c.config_sync_period),
            "must be greater than 0",
        ));
    }

    if parse_ip_sloppy(&c.bind_address).is_none() {
        errs.push(FieldError::invalid(
            "bindAddress",
            format!("{:?}", c.bind_address),
            "not a valid textual representation of an IP address",
        ));
    }
    // Empty disables the server (only reachable via flags; the file default
    // fills it in).
    if !c.healthz_bind_address.is_empty() {
        check_host_port(&mut errs, "healthzBindAddress", &c.healthz_bind_address);
    }
    if !c.metrics_bind_address.is_empty() {
        check_host_port(&mut errs, "metricsBindAddress", &c.metrics_bind_address);
    }

    check_cluster_cidr(&mut errs, &c.cluster_cidr);

    if !valid_port_range(&c.port_range) {
        errs.push(FieldError::invalid(
            "portRange",
            format!("{:?}", c.port_range),
            "must be a valid port range (e.g. 300-2000)",
        ));
    }

    check_node_port_addresses(&mut errs, &c.node_port_addresses);

    let v = &c.show_hidden_metrics_for_version;
    if !v.is_empty() && v != SHOW_HIDDEN_METRICS_VERSION {
        errs.push(FieldError::invalid(
            "showHiddenMetricsForVersion",
            format!("{v:?}"),
            format!(
                "must be omitted or have the value '{SHOW_HIDDEN_METRICS_VERSION}'. Only the previous minor version is allowed"
            ),
        ));
    }

    if !DETECT_LOCAL_MODES.contains(&c.detect_local_mode.as_str()) {
        errs.push(FieldError::not_supported(
            "detectLocalMode",
            &c.detect_local_mode,
            DETECT_LOCAL_MODES,
        ));
    }
    let required_iface = match c.detect_local_mode.as_str() {
        "BridgeInterface" => Some((
            "detectLocal.bridgeInterface",
            &c.detect_local.bridge_interface,
        )),
        "InterfaceNamePrefix" => Some((
            "detectLocal.interfaceNamePrefix",
            &c.detect_local.interface_name_prefix,
        )),
        _ => None,
    };
    if let Some((field, value)) = required_iface {
        if value.is_empty() {
            errs.push(FieldError::invalid(
                field,
                "\"\"",
                format!(
                    "must not be empty when detectLocalMode is {}",
                    c.detect_local_mode
                ),
            ));
        } else {
            // The value is written into rules (`-i <name>`, `-i <prefix>+`):
            // anything the kernel would not accept as a name is refused.
            let prefix = c.detect_local_mode == "InterfaceNamePrefix";
            if let Err(why) = check_interface_name(value, prefix) {
                errs.push(FieldError::invalid(field, format!("{value:?}"), why));
            }
        }
    }

    // The node name is compared with Node and EndpointSlice names and sent in
    // the Node watch's field selector; API object names are DNS subdomains.
    let node = c.hostname_override.trim().to_lowercase();
    if !node.is_empty() && !is_dns_subdomain(&node) {
        errs.push(FieldError::invalid(
            "hostnameOverride",
            format!("{:?}", c.hostname_override),
            "must be a valid node name (a lowercase RFC 1123 subdomain: [a-z0-9], '-' and '.', at most 253 characters)",
        ));
    }

    check_logging(&mut errs, &c.logging);
    errs
}

/// Where a missing field's error points instead (the setting that required it).
pub(crate) fn related_field(field: &str) -> Option<&'static str> {
    match field {
        "detectLocal.bridgeInterface" | "detectLocal.interfaceNamePrefix" => {
            Some("detectLocalMode")
        }
        _ => None,
    }
}

/// Linux's `dev_valid_name` (fewer than IFNAMSIZ = 16 bytes, not "." or "..",
/// no '/', ':' or whitespace), plus what iptables-restore's tokenizer treats
/// specially (quotes, backslash) and control characters. A prefix is matched
/// as `<prefix>+`, which iptables also caps at 15 bytes.
pub(crate) fn check_interface_name(name: &str, prefix: bool) -> Result<(), String> {
    let max = if prefix { 14 } else { 15 };
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "must be 1 to {max} bytes long (a Linux interface name{})",
            if prefix {
                " prefix; iptables adds '+'"
            } else {
                ""
            }
        ));
    }
    if !prefix && (name == "." || name == "..") {
        return Err("must not be \".\" or \"..\"".into());
    }
    // The kernel's isspace() also counts 0xa0.
    let bad = name.bytes().find(|&b| {
        matches!(b, b' ' | b'/' | b':' | b'"' | b'\'' | b'\\' | 0xa0) || b.is_ascii_control()
    });
    match bad {
        Some(b) => Err(format!(
            "must be a valid Linux interface name{}: {} is not allowed (no '/', ':', whitespace, quotes, backslash or control characters)",
            if prefix { " prefix" } else { "" },
            if b.is_ascii_graphic() { format!("{:?}", char::from(b)) } else { format!("byte 0x{b:02x}") }
        )),
        None => Ok(()),
    }
}

/// Kubernetes' IsDNS1123Subdomain.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn check_masquerade_bit(errs: &mut Vec<FieldError>, field: &str, bit: i32) {
    if !(0..=31).contains(&bit) {
        errs.push(FieldError::invalid(
            field,
            bit.to_string(),
            "must be within the range [0, 31]",
        ));
    }
}

/// Negative values cannot be represented here; they are reported while
/// decoding the file instead.
fn check_sync_periods(
    errs: &mut Vec<FieldError>,
    section: &str,
    sync: std::time::Duration,
    min_sync: std::time::Duration,
) {
    if sync.is_zero() {
        errs.push(FieldError::invalid(
            &format!("{section}.syncPeriod"),
            format_duration(sync),
            "must be greater than 0",
        ));
    } else if min_sync > sync {
        errs.push(FieldError::invalid(
            &format!("{section}.syncPeriod"),
            format_duration(sync),
            format!(
                "must be greater than or equal to {section}.minSyncPeriod ({})",
                format_duration(min_sync)
            ),
        ));
    }
}

fn check_mode(errs: &mut Vec<FieldError>, c: &KubeProxyConfiguration) {
    // nftables is only a valid choice while its alpha gate is on; Windows'
    // "kernelspace" is not valid on Linux.
    let mut valid = vec!["iptables", "ipvs"];
    if c.feature_gates.enabled("NFTablesProxyMode") {
        valid.push("nftables");
    }
    if !c.mode.is_empty() && !valid.contains(&c.mode.as_str()) {
        errs.push(FieldError::invalid(
            "mode",
            format!("{:?}", c.mode),
            format!(
                "must be {} or blank (blank means the best-available proxy [currently iptables])",
                valid.join(", ")
            ),
        ));
    } else if !c.mode.is_empty() && c.mode != "iptables" {
        // Valid upstream, but rendering iptables rules for it would be wrong.
        errs.push(FieldError::invalid(
            "mode",
            format!("{:?}", c.mode),
            "not supported: kube-proxy-rs implements iptables mode only",
        ));
    }
}

fn check_host_port(errs: &mut Vec<FieldError>, field: &str, input: &str) {
    let Some((host, port)) = split_host_port(input) else {
        errs.push(FieldError::invalid(
            field,
            format!("{input:?}"),
            "must be IP:port",
        ));
        return;
    };
    if parse_ip_sloppy(host).is_none() {
        errs.push(FieldError::invalid(
            field,
            format!("{host:?}"),
            "must be a valid IP",
        ));
    }
    if !port.parse::<i64>().is_ok_and(|p| (1..=65535).contains(&p)) {
        errs.push(FieldError::invalid(
            field,
            format!("{port:?}"),
            "must be a valid port",
        ));
    }
}

fn check_cluster_cidr(errs: &mut Vec<FieldError>, value: &str) {
    if value.is_empty() {
        return;
    }
    // Split without trimming, as upstream does: "a, b" is rejected.
    let cidrs: Vec<&str> = value.split(',').collect();
    let detail = match cidrs.len() {
        1 if parse_cidr_sloppy(value).is_none() => {
            "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
        }
        1 => return,
        2 => {
            let parsed: Option<Vec<bool>> = cidrs
                .iter()
                .map(|c| parse_cidr_sloppy(c).map(|(ip, _)| is_ipv4_like(&ip)))
                .collect();
            match parsed {
                Some(v4) if v4[0] != v4[1] => return,
                _ => "must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
            }
        }
        _ => "only one CIDR allowed or a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
    };
    errs.push(FieldError::invalid(
        "clusterCIDR",
        format!("{value:?}"),
        detail,
    ));
}

fn check_cidr_list(errs: &mut Vec<FieldError>, field: &str, list: &[String]) {
    for (i, cidr) in list.iter().enumerate() {
        if parse_cidr_sloppy(cidr).is_none() {
            errs.push(FieldError::invalid(
                &format!("{field}[{i}]"),
                format!("{cidr:?}"),
                "must be a valid CIDR",
            ));
        }
    }
}

fn check_node_port_addresses(errs: &mut Vec<FieldError>, list: &[String]) {
    // v1.30 accepts the keyword "primary", but only as the sole entry.
    if let Some(i) = list.iter().position(|a| a == "primary") {
        check_cidr_list(errs, "nodePortAddresses", &list[..i]);
        if list.len() != 1 {
            errs.push(FieldError::invalid(
                &format!("nodePortAddresses[{i}]"),
                "\"primary\"",
                "can't use both 'primary' and CIDRs",
            ));
        }
        return;
    }
    check_cidr_list(errs, "nodePortAddresses", list);
}

/// Same forms as the Go port-range flag: "", "N", "A-B", "A+N".
fn valid_port_range(value: &str) -> bool {
    let v = value.trim();
    if v.is_empty() {
        return true;
    }
    // Go's Atoi: optional sign, decimal digits.
    let num = |s: &str| s.parse::<i64>().ok();
    let (low, high) = match (v.find('-'), v.find('+')) {
        (None, None) => match num(v) {
            Some(p) => (p, p),
            None => return false,
        },
        (Some(i), None) => match (num(&v[..i]), num(&v[i + 1..])) {
            (Some(a), Some(b)) => (a, b),
            _ => return false,
        },
        (None, Some(i)) => match (num(&v[..i]), num(&v[i + 1..])) {
            (Some(a), Some(n)) => (a, a.saturating_add(n)),
            _ => return false,
        },
        (Some(_), Some(_)) => return false,
    };
    low <= 65535 && high <= 65535 && low <= high
}

fn check_logging(errs: &mut Vec<FieldError>, logging: &serde_json::Value) {
    // kube-proxy registers the "text" and "json" log formats.
    if let Some(format) = logging.get("format") {
        let ok = matches!(format.as_str(), Some("" | "text" | "json")) || format.is_null();
        if !ok {
            errs.push(FieldError::invalid(
                "logging.format",
                format.to_string(),
                "Unsupported log format",
            ));
        }
    }
    if let Some(v) = logging.get("verbosity") {
        if !v.is_null() && v.as_u64().is_none_or(|n| n > u64::from(u32::MAX)) {
            errs.push(FieldError::invalid(
                "logging.verbosity",
                v.to_string(),
                "must be a non-negative integer",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        for ok in ["", "0-0", "300-2000", "80", "1000+10", " 10-20 "] {
            assert!(valid_port_range(ok), "{ok:?}");
        }
        for bad in [
            "20-10", "65536", "1-70000", "65530+10", "a-b", "1-2+3", "-5", "1-",
        ] {
            assert!(!valid_port_range(bad), "{bad:?}");
        }
    }

    #[test]
    fn cluster_cidr_forms() {
        let check = |v: &str| {
            let mut e = Vec::new();
            check_cluster_cidr(&mut e, v);
            e
        };
        assert!(check("").is_empty());
        assert!(check("10.0.0.0/8").is_empty());
        assert!(check("10.0.0.0/8,fd00::/48").is_empty());
        assert!(check("fd00::/48,10.0.0.0/8").is_empty());
        assert_eq!(
            check("10.0.0.0/8,10.1.0.0/16")[0].detail,
            "must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"
        );
        assert_eq!(
            check("10.0.0.0/8, fd00::/48").len(),
            1,
            "no trimming upstream"
        );
        assert!(check("a,b,c")[0]
            .detail
            .starts_with("only one CIDR allowed"));
        assert!(check("10.0.0.0")[0]
            .detail
            .starts_with("must be a valid CIDR block"));
    }

    #[test]
    fn node_port_addresses_primary_keyword() {
        let run = |list: &[&str]| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            let mut e = Vec::new();
            check_node_port_addresses(&mut e, &list);
            e
        };
        assert!(run(&["primary"]).is_empty());
        assert!(run(&["10.0.0.0/8", "fd00::/64"]).is_empty());
        let e = run(&["10.0.0.0/8", "primary"]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "nodePortAddresses[1]");
        let e = run(&["10.0.0.1", "192.168.0.0/16"]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "nodePortAddresses[0]: Invalid value: \"10.0.0.1\": must be a valid CIDR"
        );
    }

    #[test]
    fn host_port_checks() {
        let run = |v: &str| {
            let mut e = Vec::new();
            check_host_port(&mut e, "healthzBindAddress", v);
            e
        };
        assert!(run("0.0.0.0:10256").is_empty());
        assert!(run("[::]:10256").is_empty());
        assert_eq!(run("0.0.0.0")[0].detail, "must be IP:port");
        assert_eq!(run("localhost:10256")[0].detail, "must be a valid IP");
        assert_eq!(run("1.2.3.4:0")[0].detail, "must be a valid port");
        assert_eq!(run("1.2.3.4:65536")[0].detail, "must be a valid port");
        assert_eq!(run("host:x").len(), 2, "both host and port reported");
    }
}
