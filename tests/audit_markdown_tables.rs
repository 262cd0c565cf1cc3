//! A bug report written in GitHub's issue template: headings, markdown tables (their
//! separator rows start with `-` or `|` like a rule would) and a fenced block of rules.
//! Facts checked by hand against golden/dumps/bug-report-github-template.md.

use kube_proxy_rs::audit::explain::explain;
use kube_proxy_rs::audit::parse::Ruleset;
use std::path::Path;

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
