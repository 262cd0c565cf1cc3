//! The quick reader against serde_yaml_ng: whenever it takes a piece, the result is the one
//! serde_yaml_ng gives; whenever serde_yaml_ng fails, it does not take the piece.

use super::fast;
use super::*;
use std::fmt::Debug;
use std::path::Path;

/// True when the quick reader took `text`; panics if it gave something serde_yaml_ng
/// would not.
fn agrees_as<T: DeserializeOwned + PartialEq + Debug>(text: &str, split: bool) -> bool {
    let Ok(quick) = fast::decode::<T>(text, split) else {
        return false;
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let slow = if split {
        <(T,)>::deserialize(de).map(|(t,)| t)
    } else {
        T::deserialize(de)
    };
    match slow {
        Ok(slow) => assert_eq!(quick, slow, "differs on:\n{text}"),
        Err(e) => panic!("quick reader took what serde_yaml_ng refuses ({e}):\n{text}"),
    }
    true
}

/// Every shape we compare: two generic trees and the three kept kinds.
fn agrees(text: &str, split: bool) -> bool {
    let generic = agrees_as::<serde_yaml_ng::Value>(text, split);
    let json = agrees_as::<serde_json::Value>(text, split);
    agrees_as::<Service>(text, split);
    agrees_as::<EndpointSlice>(text, split);
    agrees_as::<Node>(text, split);
    generic || json
}

const SAMPLE: &str = "---
apiVersion: v1 # a comment
kind: Service
metadata:
  name: svc-0
  namespace: 'ns-0'
  labels:
    app: \"svc-0\"
    k8s.io/x-y_z: v
  annotations: {}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.1
  clusterIPs:
  - 10.96.0.1
  ipFamilies: [] # none
  selector:

  sessionAffinity: None
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
  -   name: https
      port: -443
      nodePort: 0
      targetPort: web
  externalTrafficPolicy: ~
status:
  loadBalancer: {}
";

#[test]
fn takes_plain_dumps_and_gives_serde_yaml_ngs_result() {
    assert!(agrees(SAMPLE, false));
    assert!(agrees_as::<serde_yaml_ng::Value>(SAMPLE, false));
    let item = "  - name: a\n    port: 80\n  # c\n";
    assert!(agrees(item, true));
    // Types the kept kinds use: bools, ints, int-or-string, nulls, empty collections.
    for text in [
        "a: true\nb: False\nc: TRUE\nd: yes\ne: 'true'\n",
        "a: 0\nb: -1\nc: 18446744073709551615\nd: 2147483648\ne: '7'\n",
        "a: null\nb: Null\nc: NULL\nd: ~\ne:\nf: ''\ng: \"\"\n",
        "a:\n- x\n-\n- - y\n  - z\nb: c\n",
        "a:\n  -  x: 1\n     y: 2\n  - {}\n  - []\n",
        "\"q k\": 1\n'p': 2\n80: 3\na:b: 4\nx  : 5\n",
    ] {
        assert!(agrees(text, false), "not taken:\n{text}");
    }
}

#[test]
fn leaves_everything_else_to_serde_yaml_ng() {
    let hostile = [
        // YAML features outside the subset.
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: !tag x\n",
        "a: |\n  text\n",
        "a: >-\n  folded\n",
        "a: plain\n  continued\n",
        "a:\n  plain\n  continued\n",
        "- plain\n  continued\n",
        "a: \"multi\n  line\"\n",
        "a: \"esc\\n\"\n",
        "a: 'it''s'\n",
        "a: {b: 1}\n",
        "a: [1, 2]\n",
        "? a\n: b\n",
        "a:\tb\n",
        "a: b\r\n",
        "a: caf\u{e9}\n",
        "<<: {a: 1}\n",
        "%YAML 1.1\n---\na: 1\n",
        "--- !tag\na: 1\n",
        "---\na: 1\n...\n",
        "---\na: 1\n---\nb: 2\n",
        // Errors and near misses.
        "a: b: c\n",
        "a: b:\n",
        "a: - b\n",
        "a:b\n",
        "a: 1\n  b: 2\n",
        "a: 1\n- b\n",
        "- a\nb: 1\n",
        " a: 1\nb: 2\n",
        "a:\n  b: 1\n c: 2\n",
        "- a: 1\n   b: 2\n",
        "a: \"x\" y\n",
        "a: 'x\n",
        "a: `x`\n",
        "a: @x\n",
        "a: %x\n",
        "a: ,x\n",
        "a: x,y\n",
        "a: {}x\n",
        "[a]: 1\n",
        "\"a\\\"\": 1\n",
        "plain scalar\n",
        "",
        "# only a comment\n",
    ];
    for text in hostile {
        for split in [false, true] {
            assert!(!agrees(text, split), "taken:\n{text}");
        }
    }
    // Numbers serde_yaml_ng reads its own way: left to it, or read the same.
    for text in [
        "a: 0x1F\n",
        "a: -0x1F\n",
        "a: 0o17\n",
        "a: 0b11\n",
        "a: 012\n",
        "a: +5\n",
        "a: 1e3\n",
        "a: -1e3\n",
        "a: .5\n",
        "a: .inf\n",
        "a: -.inf\n",
        "a: .NaN\n",
        "a: -0\n",
        "a: 00\n",
        "a: 1_000\n",
        "a: 99999999999999999999999\n",
        "a: -99999999999999999999999\n",
        "a: inf\n",
        "a: -inf\n",
        "a: nan\n",
        "a: Infinity\n",
        "a: 1.\n",
        "a: 1.5.6\n",
        "a: 10.96.0.1\n",
        "a: 2001:db8::1\n",
        "a: 9223372036854775808\n",
        "a: -9223372036854775809\n",
        "a: 0x\n",
    ] {
        agrees(text, false);
    }
    // Not taken when a long key would be refused by libyaml.
    let long = format!("{}: 1\n", "k".repeat(1100));
    assert!(!agrees(&long, false));
}

/// Every document of every objects file in golden/ and tests/.
#[test]
fn agrees_on_every_fixture_document() {
    let mut files = Vec::new();
    for root in ["golden", "tests"] {
        collect_yaml(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(root),
            &mut files,
        );
    }
    assert!(files.len() > 50, "fixtures not found");
    let (mut docs, mut taken) = (0, 0);
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for doc in split_documents(text.strip_prefix('\u{feff}').unwrap_or(&text)) {
            docs += 1;
            taken += usize::from(agrees(doc.text, false));
        }
    }
    // The fixtures are plain kubectl-style YAML: nearly all of it takes the quick path.
    assert!(taken * 10 >= docs * 8, "{taken} of {docs} documents taken");
}

fn collect_yaml(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Small edits at every position of a sample: the quick reader agrees or steps aside.
#[test]
fn agrees_on_every_small_edit_of_a_sample() {
    let edits: [&str; 12] = [
        " ", ":", "#", "- ", "\n", "\"", "'", "{}", "&a ", "\n  ", "0", "~",
    ];
    let (mut tried, mut taken) = (0, 0);
    for at in 0..=SAMPLE.len() {
        for edit in edits {
            let text = format!("{}{edit}{}", &SAMPLE[..at], &SAMPLE[at..]);
            tried += 1;
            taken += usize::from(agrees(&text, false));
        }
        if at < SAMPLE.len() {
            let text = format!("{}{}", &SAMPLE[..at], &SAMPLE[at + 1..]);
            tried += 1;
            taken += usize::from(agrees(&text, false));
        }
    }
    // Many edits stay inside the subset, so the comparison is not empty.
    assert!(taken * 4 > tried, "{taken} of {tried} edits taken");
}
