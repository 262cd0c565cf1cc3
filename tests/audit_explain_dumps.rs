//! `explain` on the real-world-shaped dumps of golden/dumps (fragments, old releases,
//! `-S` listings, CRLF, restore input, odd rules; see golden/dumps/README.md for what each
//! one holds and the facts checked by hand), plus hostile input through the CLI.

use kube_proxy_rs::audit::explain::{explain, ChainInfo, Explanation, KnownPorts, PortInfo};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline::OfflineProxier;
use kube_proxy_rs::source::objects::load_objects;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

fn dump(name: &str) -> Explanation {
    let rs = Ruleset::parse(&read(&format!("golden/dumps/{name}"))).unwrap();
    explain(&rs, None)
}

fn chain<'a>(ex: &'a Explanation, name: &str) -> &'a ChainInfo {
    ex.chains
        .iter()
        .chain(&ex.shared_chains)
        .find(|c| c.chain == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

fn port<'a>(ex: &'a Explanation, label: &str) -> &'a PortInfo {
    ex.ports
        .iter()
        .find(|p| p.service_port == label)
        .unwrap_or_else(|| panic!("no port {label}: {:?}", ex.ports))
}

fn finding_ids(ex: &Explanation) -> Vec<&str> {
    ex.findings.iter().map(|f| f.id).collect()
}

#[test]
fn fragment_lists_the_five_endpoint_chains_only_jumped_to() {
    let ex = dump("fragment-5-endpoints-jumps-only.txt");
    let seps = [
        ("KUBE-SEP-WTVBAEIDEXLII3QB", "10.244.1.10:8080"),
        ("KUBE-SEP-QPR4YVNW6A5O5IPI", "10.244.2.11:8080"),
        ("KUBE-SEP-FOZ3MLGYNC2QVVLR", "10.244.3.12:8080"),
        ("KUBE-SEP-AXDFBYILIVM3XKP7", "10.244.1.13:8080"),
        ("KUBE-SEP-NDO7CYZ2FJ47G6IC", "10.244.2.14:8080"),
    ];
    for (sep, ep) in seps {
        let c = chain(&ex, sep);
        assert!(!c.in_dump && !c.declared && c.rules == 0, "{c:?}");
        assert_eq!(c.jumped_from, 1);
        assert_eq!(c.kind_id, "sep");
        assert_eq!(c.service_port.as_deref(), Some("shop/cart:http tcp"));
        // The endpoint comes from the jump's comment, and the hash of name + endpoint checks.
        assert_eq!(c.endpoint.as_deref(), Some(ep));
        assert_eq!(c.source, "hash");
        assert!(ex
            .findings
            .iter()
            .any(|f| f.id == "absent-chain" && f.chain.as_deref() == Some(sep)));
    }
    let svc = chain(&ex, "KUBE-SVC-I5LIAMPLWKMBJ54B");
    assert!(svc.in_dump && svc.rules == 6);
    assert!(!chain(&ex, "KUBE-MARK-MASQ").in_dump);
    let p = port(&ex, "shop/cart:http tcp");
    assert_eq!(p.endpoints.len(), 5);
    for e in &p.endpoints {
        assert!((e.share - 0.2).abs() < 1e-6, "{e:?}");
    }
    // 5 SEPs + KUBE-MARK-MASQ are absent; nothing else is flagged.
    assert_eq!(finding_ids(&ex), vec!["absent-chain"; 6]);
    let text = ex.to_text();
    assert!(text.contains("KUBE-SEP-NDO7CYZ2FJ47G6IC   shop/cart:http tcp endpoint 10.244.2.14:8080 [hash, current hash input] (not in the dump: only jumped to, 1 jump(s))"), "{text}");
}

#[test]
fn wrapped_grep_fragment_with_declarations_is_read() {
    let ex = dump("fragment-1.9-wrapped.txt");
    let sep = chain(&ex, "KUBE-SEP-UWNFTKZFYWNNNTK7");
    assert!(sep.declared);
    assert_eq!(sep.rules, 2);
    assert_eq!(sep.endpoint.as_deref(), Some("10.129.1.22:80"));
    assert_eq!(sep.hash_form, Some("old (ns/name:)"));
    let p = port(&ex, "demo/nginx-web-1 tcp");
    assert_eq!(p.entries.len(), 1);
    assert!(p.entries[0].contains("172.30.132.253/32 port 80"));
    assert_eq!(
        finding_ids(&ex),
        vec!["absent-chain", "old-hash-input"],
        "{:?}",
        ex.findings
    );
}

#[test]
fn v1_1_inline_hairpin_and_five_decimal_probabilities() {
    let ex = dump("v1.1-inline-hairpin.save");
    let p = port(&ex, "default/web tcp");
    assert_eq!(p.endpoints.len(), 3);
    assert!(p
        .notes
        .iter()
        .any(|n| n.contains("hairpin") && n.contains("0x4d415351")));
    // v1.1: node ports jump straight to KUBE-SVC, so external traffic is Cluster.
    assert_eq!(p.external_traffic_policy, Some("Cluster"));
    assert_eq!(p.internal_traffic_policy, Some("Cluster"));
    assert_eq!(p.entries.len(), 2, "{:?}", p.entries);
    assert!(ex
        .notes
        .iter()
        .any(|n| n == "nat POSTROUTING: marked traffic is masqueraded"));
    let five = ex
        .findings
        .iter()
        .find(|f| f.id == "five-decimal-probabilities")
        .expect("5-decimal era flagged");
    // 0.33333 then 0.5: 33.3330 %, 33.3335 %, 33.3335 %.
    assert!(
        five.message.contains("33.3330%..33.3335%"),
        "{}",
        five.message
    );
    assert_eq!(five.evidence.len(), 3);
    assert!(ex.findings.iter().any(|f| f.id == "old-hash-input"));
    for c in &ex.chains {
        assert_eq!(c.hash_form, Some("old (ns/name:)"), "{}", c.chain);
    }
}

#[test]
fn pre_1_24_xlb_firewall_and_mark_drop() {
    let ex = dump("v1.20-xlb-etp-local.save");
    let xlb = chain(&ex, "KUBE-XLB-67NZLRHBNDSAWJRO");
    assert_eq!(xlb.kind_id, "xlb");
    assert_eq!(xlb.service_port.as_deref(), Some("shop/web:http tcp"));
    assert_eq!(xlb.source, "hash");
    assert_eq!(chain(&ex, "KUBE-MARK-DROP").kind_id, "mark-drop");
    assert_eq!(chain(&ex, "KUBE-FW-67NZLRHBNDSAWJRO").kind_id, "fw");
    assert_eq!(chain(&ex, "KUBE-KUBELET-CANARY").owner, "kubelet");
    let web = port(&ex, "shop/web:http tcp");
    // Exactly the three entry points: no "Balancing rule" or XLB-internal jumps.
    assert_eq!(web.entries.len(), 3, "{:?}", web.entries);
    assert!(web.entries.iter().all(|e| !e.contains("Balancing")));
    assert_eq!(web.external_traffic_policy, Some("Local"));
    assert_eq!(web.internal_traffic_policy, Some("Cluster"));
    assert_eq!(web.source_ranges, vec!["198.51.100.0/24"]);
    assert!(web
        .notes
        .iter()
        .any(|n| n.contains("old form (before v1.24)") && n.contains("KUBE-MARK-DROP")));
    let local: Vec<(Option<&str>, Option<bool>)> = web
        .endpoints
        .iter()
        .map(|e| (e.endpoint.as_deref(), e.local))
        .collect();
    assert_eq!(
        local,
        vec![
            (Some("10.244.1.21:8080"), Some(true)),
            (Some("10.244.2.22:8080"), Some(false))
        ]
    );
    assert_eq!(web.local_endpoints.len(), 1);
    let api = port(&ex, "shop/api:grpc tcp");
    assert_eq!(api.external_traffic_policy, Some("Local"));
    assert!(api.local_endpoints.is_empty());
    assert_eq!(api.endpoints[0].local, Some(false));
    assert!(api
        .rejects
        .iter()
        .any(|r| r.contains("KUBE-MARK-DROP, no local endpoints")));
    assert!(ex.findings.is_empty(), "{:?}", ex.findings);
}

#[test]
fn s_listing_of_two_tables_and_etp_local_from_structure() {
    let ex = dump("nat-filter-S-etp-local.txt");
    // `-P INPUT/FORWARD/OUTPUT` starts the filter listing: its chains go to filter.
    assert_eq!(chain(&ex, "KUBE-PROXY-FIREWALL").table, "filter");
    assert!(ex
        .shared_chains
        .iter()
        .any(|c| c.chain == "KUBE-SERVICES" && c.table == "filter"));
    let p = port(&ex, "ingress/edge-lb:http tcp");
    assert_eq!(p.external_traffic_policy, Some("Local"));
    assert!(p
        .policy_evidence
        .iter()
        .any(|e| e.contains("KUBE-EXT jumps to KUBE-SVL")));
    let remote: Vec<&str> = p
        .endpoints
        .iter()
        .filter(|e| e.local == Some(false))
        .filter_map(|e| e.endpoint.as_deref())
        .collect();
    assert_eq!(remote, vec!["10.244.2.62:8080"]);
    assert_eq!(p.local_endpoints.len(), 2);
    assert_eq!(p.entries.len(), 4);
    // The same facts as the corpus save it was listed from.
    let save = explain(
        &Ruleset::parse(&read(
            "golden/upstream/etp-local-with-local-endpoints/expected.save",
        ))
        .unwrap(),
        None,
    );
    let q = port(&save, "ingress/edge-lb:http tcp");
    assert_eq!(q.chains.len(), p.chains.len());
    assert_eq!(q.external_traffic_policy, p.external_traffic_policy);
}

#[test]
fn crlf_dump_reads_like_the_lf_one() {
    let crlf = dump("nodeport-basic-crlf.save");
    let lf = explain(
        &Ruleset::parse(&read("golden/upstream/nodeport-basic/expected.save")).unwrap(),
        None,
    );
    assert!(read("golden/dumps/nodeport-basic-crlf.save").contains("\r\n"));
    let p = port(&crlf, "web/frontend:http tcp");
    assert_eq!(p.external_traffic_policy, Some("Cluster"));
    assert_eq!(p.endpoints.len(), 2);
    assert_eq!(
        p.entries,
        port(&lf, "web/frontend:http tcp").entries,
        "no \\r in parsed text"
    );
    assert!(p.entries.iter().all(|e| !e.contains('\r')));
    assert_eq!(crlf.chains.len(), lf.chains.len());
}

#[test]
fn restore_input_of_a_partial_sync() {
    let ex = dump("restore-input-partial-sync.rules");
    let dns = chain(&ex, "KUBE-SVC-2KKYJRIGYGQNRODB");
    assert!(!dns.in_dump);
    assert_eq!(dns.service_port.as_deref(), Some("kube-system/dns:dns udp"));
    assert_eq!(dns.source, "hash");
    // `-X` removed the stale chain: not listed.
    assert!(ex
        .chains
        .iter()
        .all(|c| c.chain != "KUBE-SEP-DY76ZDMWORDP4GAT"));
    let web = port(&ex, "default/web:http tcp");
    assert_eq!(web.affinity_timeout, Some(10800));
    assert_eq!(web.endpoints.len(), 2);
    assert_eq!(finding_ids(&ex), vec!["absent-chain"], "{:?}", ex.findings);
}

#[test]
fn odd_rules_are_flagged_with_evidence() {
    let ex = dump("odd-rules.rules");
    let ids = finding_ids(&ex);
    for id in [
        "empty-service-chain",
        "orphan-chain",
        "unreferenced-sep",
        "snat",
        "comment-without-value",
        "bad-probability",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let empty: Vec<&str> = ex
        .findings
        .iter()
        .filter(|f| f.id == "empty-service-chain")
        .filter_map(|f| f.chain.as_deref())
        .collect();
    assert_eq!(
        empty,
        vec!["KUBE-SVC-AYZKIWOBG55WDHGH", "KUBE-SVC-6G5I545MHBXURXY6"]
    );
    let sep = ex
        .findings
        .iter()
        .find(|f| f.id == "unreferenced-sep")
        .unwrap();
    assert_eq!(sep.chain.as_deref(), Some("KUBE-SEP-ELQJCIANARMHEBEY"));
    assert!(sep.evidence.iter().any(|e| e.contains("line 19")));
    let snat = ex.findings.iter().find(|f| f.id == "snat").unwrap();
    assert!(snat.message.contains("192.168.1.10"));
    let p = ex
        .findings
        .iter()
        .find(|f| f.id == "bad-probability")
        .unwrap();
    assert!(p.message.contains("1.5"));
    assert_eq!(p.service_port.as_deref(), Some("lab/skew:http tcp"));
    assert!(port(&ex, "lab/odd:http tcp").unbalanced_remainder > 0.99);
}

#[test]
fn no_comments_grouped_by_hash_then_named_with_objects() {
    let dir = root().join("golden/upstream/realistic-cluster");
    let text = std::fs::read_to_string(dir.join("expected.save")).unwrap();
    // Strip every comment (an old release / hand-edited dump).
    let re = |l: &str| -> String {
        let mut out = String::new();
        let mut rest = l;
        while let Some(i) = rest.find(" -m comment --comment ") {
            out.push_str(&rest[..i]);
            let after = &rest[i + " -m comment --comment ".len()..];
            let end = if let Some(q) = after.strip_prefix('"') {
                q.find('"').map(|j| j + 2).unwrap()
            } else {
                after.find(' ').unwrap_or(after.len())
            };
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    };
    let bare: String = text.lines().map(|l| re(l) + "\n").collect();
    assert!(!bare.contains("--comment"));
    let rs = Ruleset::parse(&bare).unwrap();
    let without = explain(&rs, None);
    assert!(without.ports.iter().all(|p| !p.named));
    assert!(without.chains.iter().all(|c| c.source == "unknown"));
    let f = without
        .findings
        .iter()
        .find(|f| f.id == "no-comments")
        .unwrap();
    assert!(f.message.contains("pass --objects"), "{}", f.message);
    // Endpoints still come from the DNAT rules, grouped with their service chain.
    let with_eps = without
        .ports
        .iter()
        .filter(|p| p.endpoints.iter().any(|e| e.endpoint.is_some()))
        .count();
    assert!(with_eps > 0);
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let set = load_objects(dir.join("objects.yaml").to_str().unwrap()).unwrap();
    let model = OfflineProxier::new(cfg, kube_proxy_rs::compat::Compat::v1_30(), IpFamily::V4)
        .build_model(&set, &mut Vec::new());
    let with = explain(&rs, Some(&KnownPorts::from_model(&model)));
    for c in &with.chains {
        assert_eq!(c.source, "objects", "{}", c.chain);
    }
    assert!(with.ports.iter().all(|p| p.named));
    // Same ports and chains as the commented dump (which also names ports that only have
    // REJECT rules, whose comments were stripped here).
    let commented = explain(&Ruleset::parse(&text).unwrap(), None);
    let with_chains: Vec<_> = commented
        .ports
        .iter()
        .filter(|p| !p.chains.is_empty())
        .collect();
    assert_eq!(with.ports.len(), with_chains.len());
    for (a, b) in with.ports.iter().zip(with_chains) {
        assert_eq!(a.service_port, b.service_port);
        assert_eq!(a.chains, b.chains);
    }
}

#[test]
fn etp_local_without_local_endpoints_from_filter_drops() {
    let ex = explain(
        &Ruleset::parse(&read(
            "golden/upstream/etp-local-no-local-endpoints/expected.save",
        ))
        .unwrap(),
        None,
    );
    for p in &ex.ports {
        assert_eq!(
            p.external_traffic_policy,
            Some("Local"),
            "{}",
            p.service_port
        );
        assert!(p
            .rejects
            .iter()
            .any(|r| r.contains("has no local endpoints")));
        assert!(p.endpoints.iter().all(|e| e.local == Some(false)));
    }
    assert_eq!(ex.ports.len(), 3);
}

fn cli(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn non_utf8_names_file_and_byte_offset() {
    let dir = std::env::temp_dir().join(format!("kprs-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("latin1.save");
    std::fs::write(
        &f,
        b"*nat\n-A KUBE-SERVICES -m comment --comment \"caf\xe9\" -j ACCEPT\n",
    )
    .unwrap();
    let (ok, _, err) = cli(&["explain", f.to_str().unwrap()], b"");
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}: not UTF-8 text at byte offset 47 (line 2, column 43)",
            f.display()
        )),
        "{err}"
    );
    // UTF-16 with its mark is read (tests/audit_paste_files.rs); without it, refused.
    let (ok, _, err) = cli(
        &["explain", "-"],
        b"*\x00n\x00a\x00t\x00\n\x00C\x00O\x00M\x00M\x00I\x00T\x00",
    );
    assert!(!ok);
    assert!(
        err.contains(
            "<stdin>: not UTF-8 text at byte offset 1 (line 1, column 2): this looks like UTF-16"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_huge_bad_token_is_echoed_cut_and_escaped() {
    let token = format!(
        "-Z{}\u{0}\u{1b}[2J{}",
        "x".repeat(500),
        "y".repeat(1_000_000)
    );
    let input = format!("*nat\n{token} KUBE-X\nCOMMIT\n");
    let (ok, _, err) = cli(&["explain", "-"], input.as_bytes());
    assert!(!ok);
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    assert!(
        err.contains("line 2: unsupported command \"-Zxxxx"),
        "{err}"
    );
    assert!(err.contains("bytes in all)"), "{err}");
    assert!(!err.contains('\u{0}') && !err.contains('\u{1b}'));
    // Control characters within the first 100 are escaped, not printed.
    let short = "*nat\n-Zab\u{0}\u{1b}cd KUBE-X\n";
    let (_, _, err) = cli(&["explain", "-"], short.as_bytes());
    assert!(err.contains("\"-Zab\\0\\u{1b}cd\""), "{err}");
}

#[test]
fn iptables_list_output_gets_a_hint() {
    let (ok, _, err) = cli(
        &["explain", "-"],
        b"Chain KUBE-SERVICES (2 references)\ntarget prot opt source destination\n",
    );
    assert!(!ok);
    assert!(err.contains("looks like `iptables -L` output"), "{err}");
}

/// Spec §8.2: kube-proxy ≥ 1.31 counts the INVALID drop (P1) and localhost NodePort
/// accepts (P2) into nfacct objects. Hand-checked against the v1.35 corpus dump:
/// line 23 is P1 (`-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name
/// ct_state_invalid_dropped_pkts -j DROP`), line 50 is P2 for apps/api:http on node port
/// 30170 (`-d 127.0.0.0/8 ... --dport 30170 -m nfacct --nfacct-name
/// localhost_nps_accepted_pkts -j KUBE-EXT-BOHGCXLYDDPQCEU2`), the v1.30 dump has neither.
#[test]
fn nfacct_rules_of_newer_releases_are_described() {
    let text = |rel: &str| explain(&Ruleset::parse(&read(rel)).unwrap(), None).to_text();
    let new = text("golden/upstream-v1.35/detect-local-nodecidr/expected.save");
    let p1 = "  filter KUBE-FORWARD: packets of INVALID connections are dropped, counted into \
              nfacct ct_state_invalid_dropped_pkts (kube-proxy >= 1.31 metric \
              kubeproxy_iptables_ct_state_invalid_dropped_packets_total)\n";
    let p2 = "  entry KUBE-NODEPORTS: 127.0.0.0/8 port 30170 (apps/api:http): localhost NodePort \
              traffic, counted into nfacct localhost_nps_accepted_pkts (kube-proxy >= 1.31 \
              metric kubeproxy_iptables_localhost_nodeports_accepted_packets_total) -> \
              KUBE-EXT-BOHGCXLYDDPQCEU2\n";
    assert!(new.contains(p1), "{new}");
    assert!(new.contains(p2), "{new}");
    // The plain NodePort entry of the same port is still there, uncounted.
    assert!(new.contains(
        "  entry KUBE-NODEPORTS: port 30170 (apps/api:http) -> KUBE-EXT-BOHGCXLYDDPQCEU2\n"
    ));
    let old = text("golden/upstream/detect-local-nodecidr/expected.save");
    assert!(old.contains(
        "  filter KUBE-FORWARD: packets of INVALID connections are dropped (not counted: the v1.30 form)\n"
    ), "{old}");
    assert!(!old.contains("nfacct"), "{old}");
}

/// README's audit section shows a fragment explained and traced: every line it prints
/// (the `...` elisions aside) is what the commands print.
#[test]
fn readme_fragment_example_is_true() {
    let readme = read("README.md");
    let start = readme
        .find("$ kube-proxy-rs explain golden/dumps/fragment-5-endpoints-jumps-only.txt")
        .expect("README shows the fragment explained");
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    assert!(block.contains("$ kube-proxy-rs trace golden/dumps/fragment-5-endpoints-jumps-only.txt --chain KUBE-SERVICES"));
    let frag = root().join("golden/dumps/fragment-5-endpoints-jumps-only.txt");
    let frag = frag.to_str().unwrap();
    let (ok, ex, err) = cli(&["explain", frag], b"");
    assert!(ok, "{err}");
    let (ok, tr, err) = cli(
        &[
            "trace",
            frag,
            "--chain",
            "KUBE-SERVICES",
            "--src",
            "10.244.5.5",
            "--dst",
            "10.96.7.7",
            "--dport",
            "80",
            "--max-outcomes",
            "1",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let printed: Vec<&str> = ex.lines().chain(tr.lines()).collect();
    let mut checked = 0;
    for l in block.lines() {
        if l.starts_with('$') || l.starts_with("    --") || l.trim() == "..." {
            continue;
        }
        assert!(
            printed.contains(&l),
            "README line not printed: {l}\n{ex}\n{tr}"
        );
        checked += 1;
    }
    assert!(checked >= 12, "{checked} lines checked");
}
