//! The forms dumps come in (golden/dumps/README.md, second table): pasted into bug reports
//! and mail, `iptables -L` and nft listings (refused), iptables-nft-save, IPv4 + IPv6
//! saves in one file, and nodes where other software has chains too. Facts checked by hand.

#[path = "support/golden_dumps.rs"]
mod golden_dumps;

use golden_dumps::{answers, assert_shop_cart, cli, corpus, dump, path, read};
use kube_proxy_rs::audit::explain::{explain, Explanation};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::model::ip::IpFamily;
use std::path::Path;

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

// ---- Paste forms of issue 9, part 2 (golden/dumps/README.md, third table). Each is the
// nat table of the corpus `nodeport-basic` save in another wrapping; `explain` must answer
// as for the clean table, the line numbers it quotes aside.

/// The nat table of golden/upstream/nodeport-basic/expected.save, as iptables-save wrote it.
/// The facts of the nodeport-basic nat table, checked by hand: one service port, two
/// endpoints at 50 % each, entered by its cluster IP and node port 30080.
fn assert_nodeport_basic(ex: &Explanation) {
    assert_eq!(ex.ports.len(), 1, "{}", ex.to_text());
    let p = &ex.ports[0];
    assert_eq!(p.service_port, "web/frontend:http tcp");
    let mut eps: Vec<(&str, f64)> = p
        .endpoints
        .iter()
        .map(|e| (e.endpoint.as_deref().unwrap_or("?"), e.share))
        .collect();
    eps.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(eps[0].0, "10.244.1.30:8080");
    assert_eq!(eps[1].0, "10.244.2.31:8080");
    assert!(eps.iter().all(|e| (e.1 - 0.5).abs() < 1e-9), "{eps:?}");
    let text = ex.to_text();
    assert!(text.contains("10.96.30.5/32 port 80"), "{text}");
    assert!(text.contains("30080"), "{text}");
    assert!(ex.findings.is_empty(), "{:?}", ex.findings);
}

fn same_as_clean(name: &str) -> Ruleset {
    let (rs, ex) = dump(name);
    assert_nodeport_basic(&ex);
    let clean = explain(&Ruleset::parse(&corpus(true)).unwrap(), None);
    assert_eq!(answers(&ex), answers(&clean), "{name}");
    rs
}

#[test]
fn line_prefixes_cat_n_grep_file_names_and_gutters_are_read() {
    for name in [
        "nodeport-basic-cat-n.txt",
        "nodeport-basic-grep-rn.txt",
        "nodeport-basic-markdown-table.md",
    ] {
        let rs = same_as_clean(name);
        // The table-header lines of the markdown file are prose; nothing else is noted.
        if name.ends_with(".md") {
            assert_eq!(
                rs.notes,
                vec![
                    "ignored 2 line(s) that are not rules: line 1 \"| rules |\", line 2 \"|---|\""
                        .to_string()
                ]
            );
        } else {
            assert!(rs.notes.is_empty(), "{name}: {:?}", rs.notes);
        }
    }
    // Box-drawing gutter with a `#` prompt inside it and a prose line before.
    let rs = same_as_clean("nodeport-basic-box-gutter.txt");
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(rs.notes[0].starts_with("ignored 1 line(s) that are not rules: line 1 \"Output"));
    // The line numbers quoted are the file's: `cat -n` line 18 is the KUBE-EXT -> SVC rule.
    let (_, ex) = dump("nodeport-basic-cat-n.txt");
    assert!(ex
        .to_text()
        .contains("(line 18): -j KUBE-SVC-XQW6G4JP7X6Y57U2"));
    // `grep` output: `--` separators, a Windows path, counters after the prefix.
    let rs = Ruleset::parse(
        "nat.save:-A KUBE-SERVICES -j ACCEPT\n--\nC:\\dumps\\nat.save:12:[3:180] -A KUBE-NODEPORTS -j RETURN\n",
    )
    .unwrap();
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let nat = rs.table("nat").unwrap();
    assert_eq!(nat.chain("KUBE-SERVICES").unwrap().rules.len(), 1);
    let r = &nat.chain("KUBE-NODEPORTS").unwrap().rules[0];
    assert_eq!((r.line, r.counters), (3, Some((3, 180))));
}

#[test]
fn powershell_zsh_and_bare_kubectl_exec_prompts_are_silent() {
    let rs = same_as_clean("nodeport-basic-powershell.txt");
    // The closing bare `PS C:\Users\ops>` (line 35) is a prompt with no command: dropped
    // silently since issue 9 part 3 (it used to be noted as prose).
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let rs = same_as_clean("nodeport-basic-zsh.txt");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    // A `-S` command after any prompt, or none, or behind fish's `> ` (a quote bar),
    // names the table of the listing after it.
    for prompt in [
        "sh-4.2# ",
        "root@node-1:/# ",
        "% ",
        "> ",
        "",
        "PS C:\\> ",
        "user@host ~ $ ",
    ] {
        let text = format!(
            "{prompt}kubectl exec -n kube-system ds/kube-proxy -- iptables -t filter -S KUBE-FORWARD\n\
             -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n"
        );
        let rs = Ruleset::parse(&text).unwrap();
        assert!(rs.notes.is_empty(), "{prompt:?}: {:?}", rs.notes);
        assert!(
            rs.table("filter").unwrap().has_chain("KUBE-FORWARD"),
            "{prompt:?}"
        );
        assert!(rs.table("nat").is_none(), "{prompt:?}");
    }
}

#[test]
fn html_escapes_smart_quotes_and_nbsp_are_undone_with_one_note() {
    let rs = same_as_clean("nodeport-basic-html-escaped.txt");
    // Line 1 is `&gt; *nat` (an escaped quote bar); lines 14-33 hold the comments.
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(
        rs.notes[0].starts_with("un-escaped 16 line(s) as a web page or chat had changed them")
            && rs.notes[0].ends_with("line(s) 1, 14, 15 and 13 more"),
        "{}",
        rs.notes[0]
    );
    let c = rs.table("nat").unwrap().chain("KUBE-SERVICES").unwrap();
    assert_eq!(
        c.rules[0].spec.comment(),
        Some("web/frontend:http cluster IP")
    );
    let rs = same_as_clean("nodeport-basic-smart-quotes.txt");
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(
        rs.notes[0].starts_with("un-escaped 15 line(s)"),
        "{}",
        rs.notes[0]
    );
    // `–dport 80` (an en dash) is `--dport 80` again.
    let svc = rs
        .table("nat")
        .unwrap()
        .chain("KUBE-SVC-XQW6G4JP7X6Y57U2")
        .unwrap();
    assert_eq!(svc.rules[0].spec.match_value("tcp", "--dport"), Some("80"));
}

#[test]
fn truncated_rules_are_noted_by_line_and_never_read_as_jumps() {
    let rs = Ruleset::parse(&read("nodeport-basic-chat-truncated.txt")).unwrap();
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    let n = &rs.notes[0];
    assert!(n.starts_with("2 line(s) look truncated"), "{n}");
    assert!(n.contains("line 26 (\"..."), "{n}");
    assert!(n.contains("line 32 (\"..."), "{n}");
    assert!(n.contains("-j KUBE-SEP-HS74D427…\")"), "{n}");
    let nat = rs.table("nat").unwrap();
    assert!(!nat.has_chain("KUBE-SEP-HS74D427"));
    assert!(!nat.has_chain("KUBE-MARK"));
    // The rest still works: the other SEP's DNAT, the service's first endpoint rule.
    let ex = explain(&rs, None);
    let p = &ex.ports[0];
    assert_eq!(p.service_port, "web/frontend:http tcp");
    assert!(p
        .endpoints
        .iter()
        .any(|e| e.endpoint.as_deref() == Some("10.244.1.30:8080")));
    assert!(
        !ex.to_text().contains("KUBE-SEP-HS74D427 "),
        "{}",
        ex.to_text()
    );
    assert!(ex.to_text().starts_with("note: 2 line(s) look truncated"));
    // A short hash the dump declares is a real chain (hand-made dumps use them).
    let rs = Ruleset::parse("*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\nCOMMIT\n")
        .unwrap();
    assert!(rs.notes.is_empty());
    assert_eq!(
        rs.table("nat")
            .unwrap()
            .chain("KUBE-SERVICES")
            .unwrap()
            .rules
            .len(),
        1
    );
}

#[test]
fn s_listings_of_both_families_and_saves_taken_twice_are_not_merged() {
    let text = read("dual-stack-S-v4-then-v6.txt");
    let v4 = Ruleset::parse(&text).unwrap();
    assert_eq!(v4.notes.len(), 1, "{:?}", v4.notes);
    assert!(
        v4.notes[0].contains("an IPv4 save (lines 1-28) and an IPv6 save (lines 29-63); read the IPv4 one (the default)"),
        "{}",
        v4.notes[0]
    );
    let nat = v4.table("nat").unwrap();
    assert!(nat.has_chain("KUBE-SEP-GPQSKPHQLH3LXDCG"));
    assert!(!nat.has_chain("KUBE-SEP-PZZP24XBTQ37X6YX"));
    // One rule each, not the two families' rules appended together.
    assert_eq!(nat.chain("PREROUTING").unwrap().rules.len(), 1);
    let v6 = Ruleset::parse_family(&text, Some(IpFamily::V6)).unwrap();
    let nat = v6.table("nat").unwrap();
    assert!(nat.has_chain("KUBE-SEP-PZZP24XBTQ37X6YX"));
    assert!(!nat.has_chain("KUBE-SEP-GPQSKPHQLH3LXDCG"));
    assert_eq!(nat.chain("PREROUTING").unwrap().rules.len(), 1);

    let rs = same_as_clean("nodeport-basic-saved-twice.save");
    assert_eq!(
        rs.notes,
        vec![
            "2 dumps of the same family in one file (a table comes again): read the first \
              (lines 1-35), ignored the later one(s) (lines 36-66), not merged"
                .to_string()
        ]
    );
}

#[test]
fn prose_that_starts_like_a_rule_is_named_in_a_note() {
    let rs = same_as_clean("nodeport-basic-prose-like-rules.txt");
    assert_eq!(rs.notes.len(), 2, "{:?}", rs.notes);
    assert!(rs.notes[0].starts_with("ignored 1 line(s) that are not rules: line 1 "));
    assert_eq!(
        rs.notes[1],
        "2 line(s) start like rules but are prose (a word where iptables-save puts an option \
         or a table name), not read: line 22 \"-A is what I ran next, and then:\", line 23 \
         \"*nat seems broken after that\""
    );
    assert!(!rs.table("nat").unwrap().has_chain("is"));
    // A real rule line that does not parse stays an error naming the line.
    let e = Ruleset::parse("*nat\n-A KUBE-SERVICES -m\nCOMMIT\n").unwrap_err();
    assert_eq!(e.line, 2);
}
