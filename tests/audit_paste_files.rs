//! Files as people save and paste them: a bug report written in GitHub's issue template
//! (headings, markdown tables whose separator rows start with `-` or `|` like a rule would,
//! a fenced block of rules; facts checked by hand against
//! golden/dumps/bug-report-github-template.md), and dumps redirected to a file on Windows
//! (UTF-8 byte-order mark, UTF-16 with its mark) read as the plain corpus file.

use kube_proxy_rs::audit::explain::explain;
use kube_proxy_rs::audit::parse::Ruleset;
use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-proxy-rs"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn windows_encodings_read_as_the_plain_file() {
    let plain =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/upstream/nodeport-basic/expected.save");
    let text = std::fs::read_to_string(&plain).unwrap();
    let dir = std::env::temp_dir().join(format!("kprs-paste-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(text.as_bytes());
    // Windows PowerShell 5.1's `>`: UTF-16LE with a mark, CRLF line ends.
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(
        text.replace('\n', "\r\n")
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let no_mark: Vec<u8> = utf16[2..].to_vec();
    let files = [
        ("bom.save", bom),
        ("utf16.save", utf16),
        ("utf16-no-mark.save", no_mark),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let plain = plain.to_str().unwrap();
    let want = cli(&["explain", plain]);
    assert_eq!(want.0, 0, "{}", want.2);
    assert!(want.1.contains("web/frontend:http tcp"), "{}", want.1);
    for name in ["bom.save", "utf16.save"] {
        assert_eq!(cli(&["explain", &p(name)]), want, "{name}");
        let t = [
            "trace",
            "--src",
            "10.0.0.1",
            "--dst",
            "10.96.30.5",
            "--dport",
            "80",
        ];
        let mut a: Vec<&str> = t.to_vec();
        a.push(plain);
        let mut b: Vec<&str> = t.to_vec();
        let f = p(name);
        b.push(&f);
        assert_eq!(cli(&b).1, cli(&a).1, "{name}");
    }
    let (code, out, err) = cli(&["explain", &p("utf16-no-mark.save")]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("utf16-no-mark.save: not UTF-8 text at byte offset 1 (line 1, column 2): this looks like UTF-16 without a byte-order mark"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn table_separator_rows_are_not_rules_and_the_fenced_rules_are_read() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/dumps/bug-report-github-template.md");
    let rs = Ruleset::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Prose: line 3 and the four table rows (7, 9, 10, 12; 14 is the sixth); headings,
    // separator rows (8, 13) and fences are silent.
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    let n = &rs.notes[0];
    assert!(
        n.starts_with("ignored 6 line(s) that are not rules: line 3 "),
        "{n}"
    );
    assert!(n.contains("line 7 \"| component | version |\""), "{n}");
    assert!(!n.contains("line 8 "), "{n}");
    let ex = explain(&rs, None);
    let p = ex
        .ports
        .iter()
        .find(|p| p.service_port == "shop/cart:http tcp")
        .expect("shop/cart port");
    assert_eq!(p.endpoints.len(), 5);
    for e in &p.endpoints {
        assert!((e.share - 0.2).abs() < 1e-6, "{e:?}");
    }
}

#[test]
fn separator_rows_of_every_spelling_are_skipped() {
    for sep in [
        "---|---",
        "|---|---|",
        "| :--- | ---: |",
        ":---|:---:",
        "|-|-|",
    ] {
        let text = format!(
            "a | b\n{sep}\n-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j KUBE-SVC-NPX46M4PTMTKRN6Y\n"
        );
        let rs = Ruleset::parse(&text).unwrap_or_else(|e| panic!("{sep}: {e}"));
        let nat = rs.table("nat").unwrap();
        assert_eq!(nat.chain("KUBE-SERVICES").unwrap().rules.len(), 1, "{sep}");
        assert_eq!(rs.notes.len(), 1, "{sep}: {:?}", rs.notes);
        assert!(
            rs.notes[0].contains("line 1 \"a | b\""),
            "{sep}: {:?}",
            rs.notes
        );
        assert!(!rs.notes[0].contains("line 2"), "{sep}: {:?}", rs.notes);
    }
    // A real rule holding a bar is still a rule.
    let rs =
        Ruleset::parse("*nat\n-A KUBE-X -m comment --comment \"a|b\" -j ACCEPT\nCOMMIT\n").unwrap();
    assert_eq!(
        rs.table("nat")
            .unwrap()
            .chain("KUBE-X")
            .unwrap()
            .rules
            .len(),
        1
    );
}

fn corpus_diff(case: &str, live: &str, extra: &[&str]) -> (i32, String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let cfg = format!("{root}/golden/upstream/{case}/config.yaml");
    let obj = format!("{root}/golden/upstream/{case}/objects.yaml");
    let live = format!("{root}/golden/dumps/{live}");
    let mut args = vec!["diff", "--config", &cfg, "--objects", &obj, "--live", &live];
    args.extend(extra);
    cli(&args)
}

#[test]
fn per_table_save_headers_start_no_new_dump() {
    // iptables-save writes `# Generated by` before every table and `# Completed on` after.
    let (code, out, err) = corpus_diff(
        "nodeport-basic",
        "nodeport-basic-per-table-headers.save",
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("equal: 34 rules"), "{out}");
    assert!(!err.contains("note:"), "{err}");
    // iptables-save then ip6tables-save, each with per-table headers: two saves, not four.
    for (fam, read) in [("ipv4", "IPv4"), ("ipv6", "IPv6")] {
        let (code, out, err) = corpus_diff(
            "dual-stack",
            "dual-stack-per-table-headers.save",
            &["--ip-family", fam],
        );
        assert_eq!(code, 0, "{fam}: {out}{err}");
        assert!(
            err.contains("an IPv4 save (lines 1-60) and an IPv6 save (lines 61-126); read the ")
                && err.contains(&format!("read the {read} one")),
            "{err}"
        );
    }
    // The same save pasted twice: the second starts at its first header (line 36).
    let one = std::fs::read_to_string(format!(
        "{}/golden/dumps/nodeport-basic-per-table-headers.save",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let rs = Ruleset::parse(&format!("{one}{one}")).unwrap();
    let n = one.lines().count();
    assert_eq!(rs.notes.len(), 1, "{:?}", rs.notes);
    assert!(
        rs.notes[0].contains(&format!(
            "read the first (lines 1-{n}), ignored the later one(s) (lines {}-{})",
            n + 1,
            2 * n
        )),
        "{:?}",
        rs.notes
    );
    assert_eq!(
        rs.table("nat")
            .unwrap()
            .chain("KUBE-SERVICES")
            .unwrap()
            .rules
            .len(),
        {
            let plain = Ruleset::parse(&one).unwrap();
            plain
                .table("nat")
                .unwrap()
                .chain("KUBE-SERVICES")
                .unwrap()
                .rules
                .len()
        }
    );
}

#[test]
fn genuine_lines_in_odd_spellings_are_read_as_written() {
    // `--insert CHAIN N` is a rule with a position, not prose.
    let rs = Ruleset::parse(
        "*filter\n--insert INPUT 1 -m comment --comment \"x\" -j ACCEPT\n-I INPUT 2 -j DROP\nCOMMIT\n",
    )
    .unwrap();
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    assert_eq!(
        rs.table("filter")
            .unwrap()
            .chain("INPUT")
            .unwrap()
            .rules
            .len(),
        2
    );
    // A genuine comment holding an entity and a dash is not "un-escaped".
    let rs = Ruleset::parse(
        "*filter\n-A INPUT -m comment --comment \"Tom&amp;Jerry \u{2013}ssh\" -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    assert!(rs.notes.is_empty(), "{:?}", rs.notes);
    let r = &rs.table("filter").unwrap().chain("INPUT").unwrap().rules[0];
    assert!(r.text.contains("Tom&amp;Jerry \u{2013}ssh"), "{}", r.text);
    // A PowerShell prompt with a wide space after `PS`: no panic, the rule still read.
    for space in ["\u{2003}", "\u{3000}", " "] {
        let text =
            format!("*nat\nPS{space}C:\\> iptables-save\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n");
        let rs = Ruleset::parse(&text).unwrap_or_else(|e| panic!("{space:?}: {e}"));
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
}
