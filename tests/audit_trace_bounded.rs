//! `trace` on hostile and partial dumps: loops, fan-outs, fragments, absent chains, and the
//! wording of negated matches.

use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::audit::trace::{trace, trace_with, Packet, Trace, TraceOptions, Verdict};
use std::path::Path;
use std::process::Command;

fn pkt(src: &str, dst: &str, dport: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        dport,
        proto: "tcp".into(),
        from_node: false,
    }
}

fn parse(text: &str) -> Ruleset {
    Ruleset::parse(text).unwrap()
}

fn total(t: &Trace) -> f64 {
    t.outcomes.iter().map(|o| o.probability).sum::<f64>()
        + t.more.as_ref().map_or(0.0, |m| m.probability)
}

/// A service whose chain jumps (randomly) back to itself: about 200 bytes.
const SELF_LOOP: &str = "*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SVC-X - [0:0]
-A PREROUTING -j KUBE-SVC-X
-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -j KUBE-SVC-X
-A KUBE-SVC-X -j DNAT --to-destination 10.0.0.1:80
COMMIT
";

#[test]
fn self_jump_is_a_loop_outcome() {
    assert!(SELF_LOOP.len() <= 220, "{}", SELF_LOOP.len());
    let t = trace(&parse(SELF_LOOP), &pkt("1.2.3.4", "10.96.0.1", 80), &[]);
    assert_eq!(t.outcomes.len(), 2, "{}", t.to_text());
    let l = &t.outcomes[0];
    assert_eq!(
        l.verdict,
        Verdict::Loop("chain KUBE-SVC-X jumps back to itself via KUBE-SVC-X -> KUBE-SVC-X".into())
    );
    assert!((l.probability - 0.5).abs() < 1e-9);
    assert_eq!(t.outcomes[1].dnat.as_deref(), Some("10.0.0.1:80"));
    let text = t.to_text();
    assert!(
        text.contains("loop: chain KUBE-SVC-X jumps back to itself"),
        "{text}"
    );
    assert!(
        text.contains("netfilter refuses to load rules with a loop"),
        "{text}"
    );
}

#[test]
fn loop_through_goto_names_every_chain() {
    let dump = "*nat
:PREROUTING ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A PREROUTING -j A
-A A -g B
-A B -j A
COMMIT
";
    let t = trace(&parse(dump), &pkt("1.2.3.4", "10.96.0.1", 80), &[]);
    assert_eq!(t.outcomes.len(), 1);
    assert_eq!(
        t.outcomes[0].verdict,
        Verdict::Loop("chain A jumps back to itself via A -> B -> A".into())
    );
}

/// A service with `n` endpoint chains picked by statistic rules, each DNATing to one of
/// `targets` addresses.
fn fan_out(n: usize, targets: usize) -> String {
    let mut s = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
         :KUBE-SVC-FAN - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    for i in 0..n {
        s += &format!(":KUBE-SEP-{i:06} - [0:0]\n");
    }
    s += "-A PREROUTING -j KUBE-SERVICES\n\
          -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-FAN\n\
          -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";
    for i in 0..n {
        if i + 1 < n {
            let p = 1.0 / (n - i) as f64;
            s += &format!(
                "-A KUBE-SVC-FAN -m statistic --mode random --probability {p:.11} \
                 -j KUBE-SEP-{i:06}\n"
            );
        } else {
            s += &format!("-A KUBE-SVC-FAN -j KUBE-SEP-{i:06}\n");
        }
    }
    for i in 0..n {
        s += &format!(
            "-A KUBE-SEP-{i:06} -s 10.1.{}.{}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{i:06} -p tcp -m tcp -j DNAT --to-destination 10.2.{}.{}:8080\n",
            i / 250,
            i % 250,
            (i % targets) / 250,
            (i % targets) % 250
        );
    }
    s + "COMMIT\n"
}

#[test]
fn fan_out_to_one_target_is_one_outcome() {
    let rs = parse(&fan_out(20_000, 1));
    let t = trace(&rs, &pkt("1.2.3.4", "10.96.0.10", 80), &[]);
    assert_eq!(t.outcomes.len(), 1);
    let o = &t.outcomes[0];
    assert_eq!(o.paths, 20_000);
    assert!((o.probability - 1.0).abs() < 1e-6, "{}", o.probability);
    let text = t.to_text();
    assert!(
        text.contains("[100.000%] ACCEPT, DNAT to 10.2.0.0:8080"),
        "{text}"
    );
    assert!(
        text.contains("(20000 paths, the most likely shown)"),
        "{text}"
    );
    assert!(text.lines().count() < 20, "{text}");
}

#[test]
fn fan_out_to_few_targets_merges_and_sums_to_all() {
    let rs = parse(&fan_out(20_000, 3));
    let opts = TraceOptions {
        max_outcomes: 20,
        ..TraceOptions::default()
    };
    let t = trace_with(&rs, &pkt("1.2.3.4", "10.96.0.10", 80), &[], &opts).unwrap();
    assert_eq!(t.outcomes.len(), 3);
    assert!(t.more.is_none());
    assert_eq!(t.outcomes.iter().map(|o| o.paths).sum::<u64>(), 20_000);
    for o in &t.outcomes {
        assert!(
            (o.probability - 1.0 / 3.0).abs() < 1e-3,
            "{}",
            o.probability
        );
    }
    assert!((total(&t) - 1.0).abs() < 1e-6, "{}", total(&t));
    let text = t.to_text();
    assert!(text.lines().count() < 40, "{} lines", text.lines().count());
    assert!(text.contains("3 outcomes over 20000 paths"), "{text}");
    // The path up to the service chain is printed once, not per outcome.
    assert_eq!(text.matches("nat KUBE-SERVICES #1").count(), 1, "{text}");
}

#[test]
fn fan_out_to_distinct_targets_is_capped() {
    let rs = parse(&fan_out(20_000, 20_000));
    let opts = TraceOptions {
        max_outcomes: 20,
        ..TraceOptions::default()
    };
    let t = trace_with(&rs, &pkt("1.2.3.4", "10.96.0.10", 80), &[], &opts).unwrap();
    assert_eq!(t.outcomes.len(), 20);
    let more = t.more.as_ref().expect("the rest summed");
    assert_eq!(more.outcomes, 19_980);
    assert_eq!(more.paths, 19_980);
    assert!((total(&t) - 1.0).abs() < 1e-6, "{}", total(&t));
    // Listed outcomes have their path (found again on a second walk), short ones.
    assert!(t
        .outcomes
        .iter()
        .all(|o| !o.path.is_empty() && o.path.len() < 10));
    let text = t.to_text();
    assert!(text.lines().count() < 150, "{} lines", text.lines().count());
    assert!(
        text.contains("... and 19980 more outcomes totalling 99.9"),
        "{}",
        &text[text.len() - 200..]
    );
}

#[test]
fn cli_max_outcomes_caps_and_zero_lists_all() {
    let dir = std::env::temp_dir().join(format!("kprs-trace-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("fan.save");
    std::fs::write(&f, fan_out(50, 50)).unwrap();
    let run = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
            .arg("trace")
            .arg(&f)
            .args(["--src", "1.2.3.4", "--dst", "10.96.0.10", "--dport", "80"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let outcomes = |s: &str| s.lines().filter(|l| l.starts_with('[')).count();
    let default = run(&[]);
    assert_eq!(outcomes(&default), 20, "{default}");
    assert!(default.contains("... and 30 more outcomes totalling 60.000% (30 paths"));
    assert_eq!(outcomes(&run(&["--max-outcomes", "5"])), 5);
    let all = run(&["--max-outcomes", "0"]);
    assert_eq!(outcomes(&all), 50);
    assert!(!all.contains("more outcomes"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exponential_dag_ends_with_a_budget_outcome() {
    // 40 chains each entering the next on two paths: 2^40 paths without a budget.
    let mut s = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for i in 0..=40 {
        s += &format!(":C{i} - [0:0]\n");
    }
    s += "-A PREROUTING -j C0\n";
    for i in 0..40 {
        s += &format!(
            "-A C{i} -m statistic --mode random --probability 0.5 -j C{}\n-A C{i} -j C{}\n",
            i + 1,
            i + 1
        );
    }
    s += "-A C40 -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n";
    let opts = TraceOptions {
        budget: 10_000,
        ..TraceOptions::default()
    };
    let t = trace_with(&parse(&s), &pkt("1.2.3.4", "10.96.0.1", 80), &[], &opts).unwrap();
    let b = t
        .outcomes
        .iter()
        .find(|o| o.verdict == Verdict::Unknown("evaluation budget exhausted".into()))
        .expect("a budget outcome");
    assert!(b.probability > 0.5, "{}", b.probability);
    assert!((total(&t) - 1.0).abs() < 1e-9);
    assert!(t
        .to_text()
        .contains("the walk stops after 10000 rule evaluations"));
}

/// kube-proxy's own chains without the built-in ones (e.g. `iptables-save -t nat | grep KUBE`).
const FRAGMENT: &str = "*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-GONE
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:6443
COMMIT
";

#[test]
fn fragment_is_traced_from_kube_services_with_a_note() {
    let rs = parse(FRAGMENT);
    for from_node in [false, true] {
        let mut p = pkt("1.2.3.4", "10.96.0.1", 443);
        p.from_node = from_node;
        let t = trace(&rs, &p, &[]);
        assert_eq!(t.start, "nat KUBE-SERVICES");
        let hook = if from_node { "OUTPUT" } else { "PREROUTING" };
        let note = format!("nat {hook} is not in the dump: tracing from nat KUBE-SERVICES");
        assert!(
            t.notes.iter().any(|n| n.starts_with(&note)),
            "{:?}",
            t.notes
        );
        assert_eq!(t.outcomes.len(), 1);
        assert_eq!(t.outcomes[0].dnat.as_deref(), Some("10.244.1.5:6443"));
        assert!(t.to_text().contains(&format!("note: {note}")));
        let filter = format!(
            "no filter table in the dump: filter {} taken as empty",
            if from_node { "OUTPUT" } else { "FORWARD" }
        );
        assert!(
            t.notes.iter().any(|n| n.starts_with(&filter)),
            "{:?}",
            t.notes
        );
    }
}

#[test]
fn start_chain_is_chosen_or_refused() {
    let rs = parse(FRAGMENT);
    let opts = TraceOptions {
        start_chain: Some("KUBE-SVC-A".into()),
        ..TraceOptions::default()
    };
    // The destination does not matter from the service chain on.
    let t = trace_with(&rs, &pkt("1.2.3.4", "10.0.0.9", 1), &[], &opts).unwrap();
    assert_eq!(t.start, "nat KUBE-SVC-A");
    assert_eq!(t.outcomes[0].dnat.as_deref(), Some("10.244.1.5:6443"));
    let opts = TraceOptions {
        start_chain: Some("KUBE-NOPE".into()),
        ..TraceOptions::default()
    };
    let e = trace_with(&rs, &pkt("1.2.3.4", "10.0.0.9", 1), &[], &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        "chain KUBE-NOPE is not in the dump's nat or filter table"
    );
}

#[test]
fn jump_to_absent_chain_is_an_unknown_outcome() {
    let t = trace(&parse(FRAGMENT), &pkt("1.2.3.4", "10.96.0.2", 80), &[]);
    assert_eq!(t.outcomes.len(), 1, "{}", t.to_text());
    assert_eq!(
        t.outcomes[0].verdict,
        Verdict::Unknown("chain KUBE-SVC-GONE not in the dump".into())
    );
    assert!(t
        .to_text()
        .contains("[100.000%] unknown: chain KUBE-SVC-GONE not in the dump"));
}

#[test]
fn negated_matches_read_as_facts() {
    let dump = "*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -m addrtype ! --dst-type LOCAL
-A PREROUTING -m mark ! --mark 0x4000/0x4000
-A PREROUTING ! -s 10.244.0.0/16
-A PREROUTING -m conntrack ! --ctstate INVALID
-A PREROUTING -p tcp -m tcp ! --dport 22
-A PREROUTING ! -p udp
-A PREROUTING -p tcp -m multiport ! --dports 22,25
-A PREROUTING -m addrtype --dst-type LOCAL
-A PREROUTING -j DNAT --to-destination 10.0.0.1:80
COMMIT
";
    let t = trace(&parse(dump), &pkt("1.2.3.4", "10.96.0.1", 80), &[]);
    let why: Vec<&str> = t.outcomes[0].path.iter().map(|s| s.why.as_str()).collect();
    assert_eq!(
        why,
        [
            "dst 10.96.0.1 is not a node address",
            "mark 0x0 & 0x4000 != 0x4000",
            "src 1.2.3.4 not in 10.244.0.0/16",
            "ctstate NEW is not in INVALID",
            "proto tcp, dport 80 is not 22",
            "proto tcp is not udp",
            "proto tcp, dport 80 not in 22,25",
            "matches everything",
        ],
        "{}",
        t.to_text()
    );
    assert!(!t.to_text().contains("not ("));
}

#[test]
fn corpus_shared_path_is_printed_once() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream/nodeport-basic/expected.save");
    let rs = parse(&std::fs::read_to_string(f).unwrap());
    let node: std::net::IpAddr = "192.168.1.10".parse().unwrap();
    let t = trace(&rs, &pkt("192.168.50.2", "192.168.1.10", 30080), &[node]);
    assert_eq!(t.outcomes.len(), 2);
    let text = t.to_text();
    assert!(
        text.contains("path shared by the outcomes below:"),
        "{text}"
    );
    assert_eq!(text.matches("nat PREROUTING #1:").count(), 1, "{text}");
    assert_eq!(text.matches("-j KUBE-NODEPORTS").count(), 1, "{text}");
    assert!(
        text.contains("because dst 192.168.1.10 is a node address\n"),
        "{text}"
    );
}

#[test]
fn log_goes_on_and_redirect_is_not_modelled() {
    let dump = "*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 80 -j LOG --log-prefix x
-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8080
COMMIT
";
    let t = trace(&parse(dump), &pkt("1.2.3.4", "10.96.0.1", 80), &[]);
    assert_eq!(t.outcomes.len(), 1);
    let o = &t.outcomes[0];
    assert_eq!(
        o.verdict,
        Verdict::Unknown("target REDIRECT is not modelled by trace".into())
    );
    assert_eq!(o.path.len(), 2);
    assert!(
        o.path[0].why.ends_with("; LOG does not end the walk"),
        "{}",
        o.path[0].why
    );
}
