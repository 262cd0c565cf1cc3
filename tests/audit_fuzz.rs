//! The parser and everything after it never panic, whatever the input.

use kube_proxy_rs::audit::explain::explain;
use kube_proxy_rs::audit::norm::rule_key;
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::audit::trace::{trace, Packet};
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "*nat",
    "*filter",
    "COMMIT",
    ":KUBE-SVC-X",
    "-",
    "[0:0]",
    "[1:x]",
    "-A",
    "-I",
    "-N",
    "-X",
    "-F",
    "-t",
    "KUBE-SVC-X",
    "KUBE-SEP-Y",
    "KUBE-SERVICES",
    "PREROUTING",
    "!",
    "-s",
    "-d",
    "-p",
    "tcp",
    "-m",
    "comment",
    "--comment",
    "\"a b",
    "\\\"",
    "\"x\"",
    "statistic",
    "--probability",
    "0.5",
    "1e9",
    "-j",
    "-g",
    "DNAT",
    "--to-destination",
    "10.0.0.1:80",
    "[::1]:5",
    "MARK",
    "--or-mark",
    "0xffffffffff",
    "recent",
    "--rcheck",
    "--mask",
    "mark",
    "--mark",
    "1/2/3",
    "-c",
    "5",
    "\n",
    "\n",
    "/",
    "10.0.0.0/99",
    "--dport",
    "1:0",
    "addrtype",
    "--dst-type",
    "LOCAL",
    "RETURN",
    "2",
    // Paste forms (golden/dumps/README.md): fences, prompts, quotes, refused listings.
    "```",
    "$",
    "> ",
    "#",
    "[root@n ~]#",
    "12:",
    "Chain",
    "(1 references)",
    "table ip kube-proxy {",
    "\0",
    "fd00::1/128",
    "[fd00::5]:80",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(s in "\\PC{0,300}") {
        if let Ok(rs) = Ruleset::parse(&s) {
            let _ = explain(&rs, None);
        }
    }

    #[test]
    fn control_characters_and_nuls_never_panic(s in "[\\x00-\\x1f>#$*:\\[\\] A-Z-]{0,300}") {
        if let Ok(rs) = Ruleset::parse(&s) {
            let _ = explain(&rs, None);
        }
    }

    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..60)) {
        let text = words.join(" ");
        if let Ok(rs) = Ruleset::parse(&text) {
            for t in &rs.tables {
                for c in &t.chains {
                    for r in &c.rules {
                        let _ = rule_key(&r.spec);
                    }
                }
            }
            let _ = explain(&rs, None);
            let pkt = Packet {
                src: "10.0.0.2".parse().unwrap(),
                dst: "10.0.0.1".parse().unwrap(),
                dport: 80,
                proto: "tcp".into(),
                from_node: false,
            };
            let _ = trace(&rs, &pkt, &[]);
        }
    }
}

/// A 4 MB line of prose is noted, cut to a short echo; a huge rule line still parses.
#[test]
fn huge_single_lines_are_bounded() {
    let prose = format!("word{}\u{0}", " x".repeat(2_000_000));
    let rs = Ruleset::parse(&format!("{prose}\n-A KUBE-SERVICES -j ACCEPT\n")).unwrap();
    assert_eq!(rs.notes.len(), 1);
    assert!(rs.notes[0].len() < 300, "{} bytes", rs.notes[0].len());
    assert!(rs.notes[0].contains("line 1 \"word x x"));
    let rule = format!(
        "-A KUBE-SERVICES{} -j ACCEPT",
        " -m mark --mark 0x1".repeat(100_000)
    );
    let rs = Ruleset::parse(&rule).unwrap();
    let c = rs.table("nat").unwrap().chain("KUBE-SERVICES").unwrap();
    assert_eq!(c.rules[0].spec.matches.len(), 100_000);
}

/// `grep -n`-like prefixes without end (`1:1:1:...`) are one line of prose, read in one
/// pass; a thread with a small stack parses it too (diff parses on its own thread).
#[test]
fn endless_line_number_prefixes_are_prose() {
    let text = format!("{}\n-A KUBE-SERVICES -j ACCEPT\n", "1:".repeat(1_000_000));
    let rs = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || Ruleset::parse(&text).unwrap())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(rs.notes[0].contains("line 1"), "{}", rs.notes[0]);
    let c = rs.table("nat").unwrap().chain("KUBE-SERVICES").unwrap();
    assert_eq!(c.rules.len(), 1);
    let rs = Ruleset::parse("12:-A KUBE-SERVICES -j ACCEPT\n").unwrap();
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

/// kube-proxy's nft table named inside a rule's comment is just a comment.
#[test]
fn an_nft_table_name_inside_a_comment_is_not_nft_output() {
    let save = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"migrated from table ip kube-proxy {\" -j ACCEPT\nCOMMIT\n";
    let rs = Ruleset::parse(save).unwrap();
    assert_eq!(
        rs.table("nat")
            .unwrap()
            .chain("KUBE-SERVICES")
            .unwrap()
            .rules
            .len(),
        1
    );
    let nft = "table ip kube-proxy {\n\tchain services {\n\t}\n}\n";
    let e = Ruleset::parse(nft).unwrap_err();
    assert!(e.to_string().contains("nftables mode"), "{e}");
}
