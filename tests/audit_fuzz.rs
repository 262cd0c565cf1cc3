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
