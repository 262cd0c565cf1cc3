//! Paste forms of issue 9, part 3 (golden/dumps/README.md, last table): `grep -A/-B/-C`
//! context lines, arrow and bare shell prompts, the table of `-S` commands, rules cut inside
//! their comment, and a save followed by an `-S` listing of the same table. Each file holds
//! the corpus `nodeport-basic` rules; the answers asserted were checked by hand.

#[path = "support/golden_dumps.rs"]
mod golden_dumps;

use golden_dumps::{answers, corpus, dump, path, read, rules};
use kube_proxy_rs::audit::explain::{explain, Explanation};
use kube_proxy_rs::audit::parse::Ruleset;
use std::process::{Command, Stdio};

fn trace(name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args(["trace", path(name).to_str().unwrap()])
        .args([
            "--src",
            "10.244.1.5",
            "--dst",
            "10.96.30.5",
            "--dport",
            "80",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Endpoints and shares of the one service port.
fn endpoints(ex: &Explanation) -> Vec<(String, f64)> {
    assert_eq!(ex.ports.len(), 1, "{}", ex.to_text());
    assert_eq!(ex.ports[0].service_port, "web/frontend:http tcp");
    let mut eps: Vec<(String, f64)> = ex.ports[0]
        .endpoints
        .iter()
        .map(|e| (e.endpoint.clone().unwrap_or_default(), e.share))
        .collect();
    eps.sort_by(|a, b| a.0.cmp(&b.0));
    eps
}

/// Answers as for the clean nat table (checked by hand there: two endpoints at 50 %,
/// cluster IP 10.96.30.5:80, node port 30080, no findings).
fn same_as_clean(name: &str) -> Ruleset {
    let (rs, ex) = dump(name);
    let eps = endpoints(&ex);
    assert_eq!(
        eps,
        vec![
            ("10.244.1.30:8080".to_string(), 0.5),
            ("10.244.2.31:8080".to_string(), 0.5)
        ]
    );
    assert!(ex.findings.is_empty(), "{:?}", ex.findings);
    let clean = explain(&Ruleset::parse(&corpus(true)).unwrap(), None);
    assert_eq!(answers(&ex), answers(&clean), "{name}");
    rs
}

#[test]
fn grep_context_lines_are_read_with_or_without_a_file_name() {
    // `grep -Hn -A 32 '^\*nat' rules.v4`: `FILE:27:*nat`, then `FILE-28-...` context lines.
    let rs = same_as_clean("nodeport-basic-grep-A-file-names.txt");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);

    // `grep -n -C 1 XQW6G4JP7X6Y57U2 nat.save`: `12:`/`13-` lines, `--` between 4 groups,
    // a `33-COMMIT` whose `*nat` grep did not show. Checked by hand: grep left out lines 1-4,
    // 8-11, 15, 22-26, so KUBE-SEP-HS74D427DPRLI62H is only jumped to, KUBE-SEP-LRXQ… keeps
    // its DNAT alone, KUBE-POSTROUTING its first rule; the shares are still 50 % each.
    let (rs, ex) = dump("nodeport-basic-grep-C1.txt");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    assert_eq!(rs.tables.len(), 1);
    assert_eq!(rules(&rs, "nat", "KUBE-SEP-LRXQ4P4CNAIXXW55"), 1);
    assert_eq!(rules(&rs, "nat", "KUBE-POSTROUTING"), 1);
    assert_eq!(rules(&rs, "nat", "KUBE-SVC-XQW6G4JP7X6Y57U2"), 3);
    assert_eq!(rules(&rs, "nat", "PREROUTING"), 1);
    assert!(!rs
        .table("nat")
        .unwrap()
        .has_chain("KUBE-SEP-HS74D427DPRLI62H"));
    assert_eq!(
        endpoints(&ex),
        vec![
            ("10.244.1.30:8080".to_string(), 0.5),
            ("10.244.2.31:8080".to_string(), 0.5)
        ]
    );
    let ids: Vec<&str> = ex.findings.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec!["absent-chain"]);
    let text = ex.to_text();
    assert!(text.contains("KUBE-SEP-HS74D427DPRLI62H is jumped to but not in the dump"));
    assert!(text.contains("entry KUBE-NODEPORTS: port 30080"), "{text}");
    assert!(!text.contains("hairpin"), "{text}");
    let t = trace("nodeport-basic-grep-C1.txt");
    assert!(t.contains("2 outcomes over 2 paths"), "{t}");
    assert!(
        t.contains("[ 50.000%] ACCEPT, DNAT to 10.244.1.30:8080, not masqueraded"),
        "{t}"
    );
    assert!(
        t.contains("[ 50.000%] unknown: chain KUBE-SEP-HS74D427DPRLI62H not in the dump"),
        "{t}"
    );

    // File names with dashes, `-B` context without a line number, counters after a prefix.
    let rs = Ruleset::parse(
        "kube-proxy-nat.save-13-:KUBE-X - [0:0]\n\
         kube-proxy-nat.save:14:-A KUBE-X -j RETURN\n\
         --\n\
         nat.save--A KUBE-Y -j RETURN\n\
         nat.save-[3:180] -A KUBE-Y -j ACCEPT\n\
         21-COMMIT\n",
    )
    .unwrap();
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let nat = rs.table("nat").unwrap();
    assert_eq!(nat.chain("KUBE-X").unwrap().line, 1);
    assert_eq!(nat.chain("KUBE-X").unwrap().rules[0].line, 2);
    let y = &nat.chain("KUBE-Y").unwrap().rules;
    assert_eq!((y.len(), y[1].counters), (2, Some((3, 180))));
    // Prose with a number and a dash is still prose; a COMMIT after a closed table is
    // still an error naming its line.
    let rs = Ruleset::parse("12-3 weeks ago it worked\n-A KUBE-X -j RETURN\n").unwrap();
    assert!(
        rs.notes[0].contains("line 1 \"12-3 weeks"),
        "{:?}",
        rs.notes
    );
    let e = Ruleset::parse("*nat\nCOMMIT\nCOMMIT\n").unwrap_err();
    assert_eq!((e.line, e.msg.as_str()), (3, "COMMIT outside a table"));
}

#[test]
fn arrow_prompts_and_bare_prompts_are_silent() {
    // oh-my-zsh `➜  ~ ssh node-1`, `[root@node-1 ~]# iptables-save -t nat`, bare closers.
    let rs = same_as_clean("nodeport-basic-ohmyzsh.txt");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    // starship: its info line is prose; `❯ ssh`, `ops@node-1:~$ sudo ...`, bare `❯`.
    let rs = same_as_clean("nodeport-basic-starship.txt");
    assert_eq!(
        rs.notes,
        vec!["ignored 1 line(s) that are not rules: line 1 \"~/src/cluster on  main\"".to_string()]
    );
    for prompt in [
        "➜  ~ ",
        "➜  kube git:(main) ✗ ",
        "❯ ",
        "[root@node-1 ~]# ",
        "root@node:~# ",
        "$ sudo ",
    ] {
        let text = format!(
            "{prompt}iptables -t filter -S KUBE-FORWARD\n\
             -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n"
        );
        let rs = Ruleset::parse(&text).unwrap();
        assert!(rs.notes.is_empty(), "{prompt:?}: {:?}", rs.notes);
        assert_eq!(rules(&rs, "filter", "KUBE-FORWARD"), 1, "{prompt:?}");
        assert!(rs.table("nat").is_none(), "{prompt:?}");
    }
    for bare in [
        "$",
        "#",
        "root@node:~#",
        "ops@laptop:~$",
        "bash-5.1$",
        "➜  ~",
        "❯",
        "[root@node-1 ~]#",
        "PS C:\\Users\\ops>",
        "user@host ~ %",
    ] {
        let rs = Ruleset::parse(&format!("*nat\n-A KUBE-X -j RETURN\nCOMMIT\n{bare}\n")).unwrap();
        assert!(rs.notes.is_empty(), "{bare:?}: {:?}", rs.notes);
    }
    let rs = Ruleset::parse("*nat\n-A KUBE-X -j RETURN\nCOMMIT\nThanks!\n").unwrap();
    assert_eq!(rs.notes.len(), 1);
}

#[test]
fn the_table_of_an_s_command_is_the_table_of_the_lines_after_it() {
    // The whole nodeport-basic save listed chain by chain, alternating filter and nat, so
    // a command whose table is misread puts the next chain in the other table.
    let (rs, ex) = dump("nodeport-basic-S-chain-by-chain.txt");
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let names: Vec<&str> = rs.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["filter", "nat"]);
    for (table, chain, n) in [
        ("filter", "KUBE-FORWARD", 3),
        ("filter", "INPUT", 4),
        ("filter", "OUTPUT", 3),
        ("filter", "FORWARD", 4),
        ("filter", "KUBE-FIREWALL", 1),
        ("filter", "KUBE-SERVICES", 0),
        // `sh -c "iptables -t nat -S PREROUTING; ..."`: one `-P` line names no table.
        ("nat", "PREROUTING", 1),
        ("nat", "INPUT", 0),
        ("nat", "POSTROUTING", 1),
        ("nat", "KUBE-SERVICES", 2),
        ("nat", "KUBE-NODEPORTS", 1),
        ("nat", "KUBE-SVC-XQW6G4JP7X6Y57U2", 3),
        ("nat", "KUBE-SEP-HS74D427DPRLI62H", 2),
        ("nat", "KUBE-POSTROUTING", 3),
    ] {
        assert_eq!(rules(&rs, table, chain), n, "{table} {chain}");
    }
    let nat = rs.table("nat").unwrap();
    assert!(!nat.has_chain("KUBE-FORWARD") && !nat.has_chain("KUBE-FIREWALL"));
    assert_eq!(
        nat.chain("PREROUTING").unwrap().policy.as_deref(),
        Some("ACCEPT")
    );
    // The same answers as the whole save, in the listing's order (lines and chain lists).
    let full = explain(&Ruleset::parse(&corpus(false)).unwrap(), None);
    let unordered = |ex: &Explanation| {
        let mut v: Vec<String> = answers(ex)
            .into_iter()
            .map(|l| match l.strip_prefix("  chains: ") {
                Some(c) => {
                    let mut w: Vec<&str> = c.split(' ').collect();
                    w.sort();
                    format!("  chains: {}", w.join(" "))
                }
                None => l,
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(unordered(&ex), unordered(&full));
    let t = trace("nodeport-basic-S-chain-by-chain.txt");
    assert!(
        t.contains("[ 50.000%] ACCEPT, DNAT to 10.244.1.30:8080"),
        "{t}"
    );
    assert!(
        t.contains("[ 50.000%] ACCEPT, DNAT to 10.244.2.31:8080"),
        "{t}"
    );
}

#[test]
fn a_rule_cut_inside_its_comment_is_dropped_only_in_a_paste() {
    // After a prompt: line 25 (KUBE-SEP-HS74…'s masquerade rule) cut at `"web/fr`, followed
    // by a new rule; line 33 (the jump to KUBE-SEP-HS74…) cut at `10.244.2.3`, the paste's end.
    let (rs, ex) = dump("nodeport-basic-cut-in-quote.txt");
    assert_eq!(
        rs.notes,
        vec![
            "2 line(s) look truncated (cut short by a chat or a terminal), not read: line 25 \
             (\"...244.2.31/32 -m comment --comment \"web/fr\"), line 33 (\"...comment \
             \"web/frontend:http -> 10.244.2.3\")"
                .to_string()
        ]
    );
    assert_eq!(rules(&rs, "nat", "KUBE-SEP-HS74D427DPRLI62H"), 1);
    assert_eq!(rules(&rs, "nat", "KUBE-SVC-XQW6G4JP7X6Y57U2"), 2);
    // Checked by hand: one endpoint at 50 %, the other half matches no endpoint rule, the
    // other SEP is jumped to by nothing.
    assert_eq!(endpoints(&ex), vec![("10.244.1.30:8080".to_string(), 0.5)]);
    let ids: Vec<&str> = ex.findings.iter().map(|f| f.id).collect();
    assert_eq!(ids, vec!["unreferenced-sep"]);
    assert!(ex
        .to_text()
        .contains("50.0000% of new connections match no endpoint rule"));
    let t = trace("nodeport-basic-cut-in-quote.txt");
    assert!(t.contains("[ 50.000%] ACCEPT, no DNAT"), "{t}");
    assert!(
        t.contains("[ 50.000%] ACCEPT, DNAT to 10.244.1.30:8080"),
        "{t}"
    );

    // The same text as a file a program wrote (no prompt): the cut in the middle is an
    // unterminated quote, an error naming its line.
    let text = read("nodeport-basic-cut-in-quote.txt");
    let file = &text[text.find('\n').unwrap() + 1..];
    let e = Ruleset::parse(file).unwrap_err();
    assert_eq!((e.line, e.msg.as_str()), (24, "unterminated quote"));
    // Another line ending in `…` makes the text a paste too.
    let rs = Ruleset::parse(
        "*nat\n-A KUBE-SVC-X -j KUBE-SEP-HS74D4…\n-A KUBE-SVC-X -m comment --comment \"cut\n\
         -A KUBE-SVC-X -j RETURN\nCOMMIT\n",
    )
    .unwrap();
    assert!(
        rs.notes[0].starts_with("2 line(s) look truncated"),
        "{:?}",
        rs.notes
    );
    assert_eq!(rules(&rs, "nat", "KUBE-SVC-X"), 1);
    // In a paste, a quote the next line closes is not a cut: still an error.
    let e = Ruleset::parse(
        "$ iptables-save -t nat\n*nat\n\
         -A KUBE-SVC-X -m comment --comment \"web/frontend:http\n\
         -> 10.244.1.30:8080\" -j KUBE-SEP-A\nCOMMIT\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.msg.as_str()), (3, "unterminated quote"));
}

#[test]
fn an_s_listing_after_a_save_of_the_same_table_is_ignored_with_one_note() {
    let rs = same_as_clean("nodeport-basic-save-then-S.txt");
    assert_eq!(
        rs.notes,
        vec![
            "2 dumps of the same family in one file (a table comes again): read the first \
             (lines 1-36), ignored the later one(s) (lines 37-69), not merged"
                .to_string()
        ]
    );
    // Not appended twice.
    assert_eq!(rules(&rs, "nat", "KUBE-SVC-XQW6G4JP7X6Y57U2"), 3);
    // The other order: the listing is read, the save after it ignored.
    let text = read("nodeport-basic-save-then-S.txt");
    let lines: Vec<&str> = text.lines().collect();
    let swapped = format!("{}\n{}\n", lines[36..].join("\n"), lines[..36].join("\n"));
    let rs = Ruleset::parse(&swapped).unwrap();
    assert_eq!(rules(&rs, "nat", "KUBE-SVC-XQW6G4JP7X6Y57U2"), 3);
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(
        // Its part ends before `# Generated by` (the blank `iptables-save` prompt is in it).
        rs.notes[0].contains("read the first (lines 1-34), ignored the later one(s) (lines 35-69)"),
        "{}",
        rs.notes[0]
    );
    // A listing of another table is read beside the save.
    let rs = Ruleset::parse(
        "*nat\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n\
         -P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -j KUBE-FIREWALL\n",
    )
    .unwrap();
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    assert_eq!(rules(&rs, "filter", "INPUT"), 1);
}
