//! The forms dumps come in (golden/dumps/README.md, second table): pasted into bug reports
//! and mail, `iptables -L` and nft listings (refused), iptables-nft-save, IPv4 + IPv6
//! saves in one file, and nodes where other software has chains too. Facts checked by hand.

use kube_proxy_rs::audit::explain::{explain, Explanation};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::model::ip::IpFamily;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/dumps")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap()
}

fn dump(name: &str) -> (Ruleset, Explanation) {
    let rs = Ruleset::parse(&read(name)).unwrap();
    let ex = explain(&rs, None);
    (rs, ex)
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The five endpoints of the shop/cart fragment (see fragment-5-endpoints-jumps-only.txt).
fn assert_shop_cart(ex: &Explanation) {
    let p = ex
        .ports
        .iter()
        .find(|p| p.service_port == "shop/cart:http tcp")
        .expect("shop/cart port");
    assert_eq!(p.endpoints.len(), 5);
    for e in &p.endpoints {
        assert!((e.share - 0.2).abs() < 1e-6, "{e:?}");
    }
    let ids: Vec<&str> = ex.findings.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec!["absent-chain"; 6]);
}

#[test]
fn markdown_bug_report_is_read_and_its_prose_noted_once() {
    let (rs, ex) = dump("bug-report-markdown.md");
    assert_shop_cart(&ex);
    assert_eq!(rs.tables.len(), 1);
    assert_eq!(rs.tables[0].name, "nat");
    // Lines 1 and 14 are prose; the fence and the prompt (lines 3, 4, 12) are not noted.
    assert_eq!(
        rs.notes,
        vec![
            "ignored 2 line(s) that are not rules: line 1 \"Hi, after upgrading the node, \
             cart requests time out. Here's... (72 bytes in all)\", line 14 \"Any idea? Thanks.\""
                .to_string()
        ]
    );
    assert!(ex.to_text().starts_with("note: ignored 2 line(s)"));
}

#[test]
fn email_quoted_s_listings_take_their_table_from_the_prompt() {
    let (rs, ex) = dump("email-quoted-S.txt");
    assert_shop_cart(&ex);
    // `# iptables -S KUBE-FORWARD` lists the filter table (no -t).
    let fwd = rs.table("filter").unwrap().chain("KUBE-FORWARD").unwrap();
    assert_eq!(fwd.rules.len(), 2);
    assert!(rs.table("nat").unwrap().chain("KUBE-FORWARD").is_none());
    let svc = rs
        .table("nat")
        .unwrap()
        .chain("KUBE-SVC-I5LIAMPLWKMBJ54B")
        .unwrap();
    assert_eq!(svc.rules.len(), 6);
    // Prose: lines 1, 2 ("> Here is the output:"), 17 ("> ..."), 18.
    assert_eq!(rs.notes.len(), 1);
    assert!(
        rs.notes[0].starts_with(
            "ignored 4 line(s) that are not rules: line 1 \"On Tue, 1 Dec 2026, Alex wrote:\", \
             line 2 \"> Here is the output:\", line 17 \"> ...\" and 1 more"
        ),
        "{}",
        rs.notes[0]
    );
}

#[test]
fn iptables_l_and_nft_listings_are_refused_at_their_first_line() {
    let e = Ruleset::parse(&read("iptables-L-listing.txt")).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(
        e.msg
            .contains("looks like `iptables -L` output (\"Chain KUBE-SERVICES (2 references)\")"),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("give `iptables-save`"));
    let e = Ruleset::parse(&read("nft-kube-proxy-mode.txt")).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(
        e.msg
            .contains("kube-proxy's nftables mode (\"table ip kube-proxy\")"),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("read iptables mode only"));
    let e = Ruleset::parse("# nft list ruleset\ntable ip nat {\n}\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.msg.contains("iptables-nft-save"), "{}", e.msg);
    let e = Ruleset::parse("\ntable ip6 kube-proxy {\n").unwrap_err();
    assert_eq!(e.line, 2);
    // Through the CLI: exit 2 with the line.
    let (code, _, err) = cli(&["explain", path("nft-kube-proxy-mode.txt").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 2: this is `nft list ruleset` output of kube-proxy's nftables mode"),
        "{err}"
    );
}

#[test]
fn iptables_nft_save_with_its_warning_reads_like_the_plain_save() {
    let (rs, ex) = dump("nodeport-basic-nft-save-warning.save");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let (_, plain) = dump("nodeport-basic-crlf.save");
    // Equal but for the line numbers quoted (the nft-save file has two more header lines).
    let strip = |t: String| -> Vec<String> {
        t.lines()
            .map(|l| l.split(" (line ").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(strip(ex.to_text()), strip(plain.to_text()));
    let p = &ex.ports[0];
    assert_eq!(p.service_port, "web/frontend:http tcp");
    assert_eq!(p.endpoints.len(), 2);
}

#[test]
fn mixed_family_dump_reads_one_family_by_its_addresses() {
    let text = read("dual-stack-v6-then-v4.save");
    // IPv6 save first (lines 1-62), IPv4 after (63-118): the default is IPv4 anyway.
    let v4 = Ruleset::parse(&text).unwrap();
    assert_eq!(v4.notes.len(), 1);
    assert!(v4.notes[0].contains("an IPv4 save (lines 63-118) and an IPv6 save (lines 1-62); read the IPv4 one (the default)"), "{}", v4.notes[0]);
    let nat = v4.table("nat").unwrap();
    assert!(nat.has_chain("KUBE-SEP-GPQSKPHQLH3LXDCG"));
    assert!(!nat.has_chain("KUBE-SEP-PZZP24XBTQ37X6YX"));
    assert!(!nat.has_chain("KUBE-SVC-NF6QK2O3SYIOENSX"));
    let v6 = Ruleset::parse_family(&text, Some(IpFamily::V6)).unwrap();
    assert!(v6.notes[0].contains("read the IPv6 one; select the other with --ip-family IPv4"));
    let nat = v6.table("nat").unwrap();
    assert!(
        nat.has_chain("KUBE-SEP-PZZP24XBTQ37X6YX") && nat.has_chain("KUBE-SVC-NF6QK2O3SYIOENSX")
    );
    assert!(!nat.has_chain("KUBE-SEP-GPQSKPHQLH3LXDCG"));
    // diff of each family against the corpus objects: equal, the note on stderr.
    let ds = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream/dual-stack");
    let (cfg, obj) = (ds.join("config.yaml"), ds.join("objects.yaml"));
    let live = path("dual-stack-v6-then-v4.save");
    for fam in ["IPv4", "IPv6"] {
        let (code, out, err) = cli(&[
            "diff",
            "--config",
            cfg.to_str().unwrap(),
            "--objects",
            obj.to_str().unwrap(),
            "--live",
            live.to_str().unwrap(),
            "--ip-family",
            fam,
            "--emulated-version",
            "1.30",
        ]);
        assert_eq!(code, 0, "{fam}: {out}{err}");
        assert!(err.contains(&format!("read the {fam} one")), "{err}");
    }
    // trace picks the family of --dst.
    let (code, out, _) = cli(&[
        "trace",
        live.to_str().unwrap(),
        "--src",
        "fd00:10:244:1::5",
        "--dst",
        "fd00:10:96::190:11",
        "--dport",
        "80",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[fd00:10:244:2::191]:8080"), "{out}");
    assert!(out.contains("read the IPv6 one"), "{out}");
}

#[test]
fn other_software_is_listed_by_owner_and_never_a_diff_finding() {
    let (_, ex) = dump("other-software-cni-docker.save");
    let got: Vec<(&str, usize)> = ex
        .other_software
        .iter()
        .map(|o| (o.owner, o.chains))
        .collect();
    // Counted by hand: (table, chain) pairs, filter then nat.
    let want = [
        ("kubelet", 4),
        ("Calico", 4),
        ("Docker", 4),
        ("Flannel", 2),
        ("Weave Net", 2),
        ("Antrea", 1),
        ("kube-router", 1),
        ("kube-proxy canary (not compared)", 1),
        ("Cilium", 1),
        ("AWS VPC CNI", 2),
        ("GKE metadata server", 1),
        ("ip-masq-agent", 1),
    ];
    let mut g = got.clone();
    g.sort();
    let mut w = want.to_vec();
    w.sort();
    assert_eq!(g, w);
    let text = ex.to_text();
    assert!(
        text.contains("other software (not kube-proxy's, never findings):"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("Calico "))
            .count(),
        1
    );
    assert!(ex.findings.is_empty(), "{:?}", ex.findings);
    let np = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream/nodeport-basic");
    let (code, out, err) = cli(&[
        "diff",
        "--config",
        np.join("config.yaml").to_str().unwrap(),
        "--objects",
        np.join("objects.yaml").to_str().unwrap(),
        "--live",
        path("other-software-cni-docker.save").to_str().unwrap(),
        "--emulated-version",
        "1.30",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("equal"), "{out}");
}
