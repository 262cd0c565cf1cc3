use super::*;

const SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
  selector:
    app: web
";

const SLICE: &str = "addressType: IPv4
apiVersion: discovery.k8s.io/v1
endpoints:
- addresses:
  - 10.244.1.5
  conditions:
    ready: true
  nodeName: node-a
  zone: zone-a
kind: EndpointSlice
metadata:
  labels:
    kubernetes.io/service-name: web
  name: web-abc
  namespace: shop
ports:
- name: http
  port: 8080
  protocol: TCP
";

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - address: 192.168.1.10
    type: InternalIP
";

fn parse(text: &str) -> ObjectSet {
    match parse_objects(text, "in.yaml") {
        Ok(set) => set,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn parse_err(text: &str) -> LoadError {
    match parse_objects(text, "in.yaml") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn names(set: &ObjectSet) -> Vec<String> {
    let meta = |m: &ObjectMeta| {
        format!(
            "{}/{}",
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default()
        )
    };
    let mut v: Vec<String> = set
        .services
        .iter()
        .map(|(s, o)| format!("svc {} @{}", meta(&s.metadata), o.line))
        .collect();
    v.extend(
        set.endpoint_slices
            .iter()
            .map(|(s, o)| format!("eps {} @{}", meta(&s.metadata), o.line)),
    );
    v.extend(
        set.nodes
            .iter()
            .map(|(s, o)| format!("node {} @{}", meta(&s.metadata), o.line)),
    );
    v
}

/// Indents a top-level object as a `kubectl -o yaml` list item.
fn as_item(obj: &str) -> String {
    let mut s = String::new();
    for (i, line) in obj.lines().enumerate() {
        s.push_str(if i == 0 { "- " } else { "  " });
        s.push_str(line);
        s.push('\n');
    }
    s
}

#[test]
fn multi_document_with_empty_and_comment_documents() {
    let text = format!(
        "# leading comment\n---\n{SVC}---\n\n---\n# only a comment\n---\n{SLICE}--- \n{NODE}"
    );
    let set = parse(&text);
    assert_eq!(
        names(&set),
        [
            "svc shop/web @3",
            "eps shop/web-abc @22",
            "node /node-a @42"
        ]
    );
    assert_eq!(
        set.services[0]
            .0
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port,
        80
    );
    assert_eq!(
        set.endpoint_slices[0].0.endpoints.as_ref().unwrap()[0]
            .node_name
            .as_deref(),
        Some("node-a")
    );
    assert_eq!(set.services[0].1.to_string(), "in.yaml:3");
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn document_end_markers_and_directives() {
    let text = format!("%YAML 1.1\n---\n{SVC}...\n{NODE}...\n");
    let set = parse(&text);
    assert_eq!(names(&set), ["svc shop/web @3", "node /node-a @18"]);
}

#[test]
fn kubectl_list() {
    let text = format!(
        "apiVersion: v1\nitems:\n{}{}{}kind: List\nmetadata:\n  resourceVersion: \"\"\n",
        as_item(SVC),
        as_item(SLICE),
        as_item(NODE)
    );
    let set = parse(&text);
    assert_eq!(
        names(&set),
        [
            "svc shop/web @3",
            "eps shop/web-abc @17",
            "node /node-a @36"
        ]
    );
}

#[test]
fn list_parsed_the_same_on_fast_and_generic_paths() {
    // Indented items with an unusual dash layout still take the fast path;
    // a flow-style list only the generic one. Both must agree.
    let block = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        as_item(SVC)
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let flow = "{apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}}]}";
    let a = parse(&block);
    let b = parse(flow);
    assert_eq!(a.services.len(), 1);
    assert_eq!(a.services[0].0.metadata, b.services[0].0.metadata);
    assert_eq!(a.services[0].1.line, 4);
}

#[test]
fn typed_lists_from_the_api_server_omit_item_kinds() {
    let text = "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata:\n    name: a\n- metadata:\n    name: b\n    namespace: x\n";
    let set = parse(text);
    assert_eq!(names(&set), ["svc default/a @4", "svc x/b @6"]);
    let text = "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSliceList\",\"items\":[{\"addressType\":\"IPv4\",\"endpoints\":[],\"metadata\":{\"name\":\"s\"}}]}";
    let set = parse(text);
    assert_eq!(names(&set), ["eps default/s @1"]);
}

#[test]
fn json_list_as_kubectl_prints_it() {
    let svc: serde_json::Value = serde_yaml_ng::from_str(SVC).unwrap();
    let node: serde_json::Value = serde_yaml_ng::from_str(NODE).unwrap();
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "kube-system"}});
    let list = serde_json::json!({"apiVersion": "v1", "items": [svc, pod, node], "kind": "List", "metadata": {"resourceVersion": ""}});
    let text = serde_json::to_string_pretty(&list).unwrap();
    let set = parse(&text);
    assert_eq!(names(&set), ["svc shop/web @1", "node /node-a @1"]);
    assert_eq!(set.warnings.len(), 1);
    assert!(
        set.warnings[0].starts_with("in.yaml:1: skipping items[1] Pod kube-system/p:"),
        "{}",
        set.warnings[0]
    );
}

#[test]
fn json_single_object_and_yaml_only_json() {
    let set =
        parse("\n{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n1\"}}\n");
    assert_eq!(names(&set), ["node /n1 @2"]);
    // A trailing comment is YAML, not JSON: the YAML parser takes over.
    let set = parse(
        "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n2\"}} # c\n",
    );
    assert_eq!(names(&set), ["node /n2 @1"]);
}

#[test]
fn missing_namespace_defaults() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nendpoints: []\nmetadata:\n  name: a-1\n  namespace: \"\"\n";
    let set = parse(text);
    assert_eq!(
        set.services[0].0.metadata.namespace.as_deref(),
        Some("default")
    );
    assert_eq!(
        set.endpoint_slices[0].0.metadata.namespace.as_deref(),
        Some("default")
    );
    let node = parse(NODE);
    assert_eq!(node.nodes[0].0.metadata.namespace, None);
}

#[test]
fn unknown_kinds_and_missing_fields_warn() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  namespace: kube-system\n---\nkind: Service\nmetadata:\n  name: x\n---\napiVersion: v1\nmetadata:\n  name: y\n---\n- just a list\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: old\n";
    let set = parse(text);
    assert!(names(&set).is_empty());
    assert_eq!(
            set.warnings,
            [
                "in.yaml:1: skipping Pod kube-system/p1: v1 Pod is not a Service, EndpointSlice or Node",
                "in.yaml:7: skipping Service x: no apiVersion",
                "in.yaml:11: skipping y: no kind",
                "in.yaml:15: skipping document: not a mapping",
                "in.yaml:17: skipping EndpointSlice old: apiVersion discovery.k8s.io/v1beta1 is not supported, want discovery.k8s.io/v1",
            ]
        );
}

#[test]
fn syntax_error_reports_file_line_and_column() {
    // Line 8 has a mapping value where none is allowed.
    let text = format!("{NODE}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: a: b\n");
    let err = parse_err(&text);
    match &err {
        LoadError::Syntax { line, column, .. } => {
            assert_eq!((*line, *column), (13, Some(10)), "{err}");
        }
        other => panic!("wrong error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("in.yaml:13:10: invalid YAML: mapping values are not allowed"),
        "{msg}"
    );
    assert!(
        !msg.contains("line 4 "),
        "position must be file-relative: {msg}"
    );
}

#[test]
fn syntax_error_context_lines_are_file_relative() {
    let text = format!("{SVC}---\napiVersion: v1\nkind: Node\nmetadata:\n  name: [a\n");
    let msg = parse_err(&text).to_string();
    assert!(msg.starts_with("in.yaml:20:"), "{msg}");
    // libyaml names where the unclosed flow sequence started.
    assert!(msg.contains("line 19 column 9"), "{msg}");
}

#[test]
fn type_error_names_object_and_field_path() {
    let text = format!("{NODE}---\n{}", SVC.replace("port: 80", "port: abc"));
    let err = parse_err(&text);
    let msg = err.to_string();
    assert_eq!(
            msg,
            "in.yaml:10: Service shop/web: spec.ports[0].port: invalid type: string \"abc\", expected i32 (at line 19, column 11)"
        );
}

#[test]
fn wrong_shape_at_the_top_is_a_type_error_not_a_syntax_error() {
    let err = parse_err("apiVersion: v1\nkind: Service\nmetadata: 5\n");
    match err {
        LoadError::Type(t) => {
            assert_eq!((t.path.as_str(), t.at), ("metadata", Some((3, 11))));
            assert_eq!(t.object, "Service default/<unnamed>");
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn type_error_in_generic_path_has_path_too() {
    let text = "{apiVersion: v1, kind: Service, metadata: {name: w}, spec: {ports: [{port: x}]}}";
    let msg = parse_err(text).to_string();
    assert_eq!(msg, "in.yaml:1: Service default/w: spec.ports[0].port: invalid type: string \"x\", expected i32");
}

#[test]
fn list_item_error_reports_list_line_and_index() {
    let bad = SLICE.replace("ready: true", "ready: maybe");
    let text = format!(
        "# dump\napiVersion: v1\nitems:\n{}{}kind: List\n",
        as_item(SVC),
        as_item(&bad)
    );
    let msg = parse_err(&text).to_string();
    assert_eq!(
            msg,
            "in.yaml:2: EndpointSlice shop/web-abc: items[1].endpoints[0].conditions.ready: invalid type: string \"maybe\", expected a boolean (at line 24, column 14)"
        );
    // Same through JSON, where only the list's line is known.
    let mut v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    v["items"][1]["endpoints"][0]["conditions"]["ready"] = "maybe".into();
    let msg = parse_err(&format!("\n{v}")).to_string();
    assert_eq!(
            msg,
            "in.yaml:2: EndpointSlice shop/web-abc: items[1].endpoints[0].conditions.ready: invalid type: string \"maybe\", expected a boolean"
        );
}

#[test]
fn list_item_syntax_error_is_file_relative() {
    let text = format!("apiVersion: v1\nitems:\n{}- apiVersion: v1\n  kind: Node\n  metadata: {{name: [}}\nkind: List\n", as_item(SVC));
    let err = parse_err(&text);
    match err {
        LoadError::Syntax { line, .. } => assert_eq!(line, 19),
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn multi_line_quoted_scalar_at_column_zero_does_not_fool_the_splitter() {
    // The continuation line looks like the end of the items block and
    // like a `kind:` key, but it is inside a quoted string.
    let text = "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n    annotations:\n      note: \"x\nkind: Pod\"\nkind: List\n";
    let set = parse(text);
    // Only the generic path can read this, and it knows no item lines.
    assert_eq!(names(&set), ["svc default/a @1"]);
    let note = &set.services[0].0.metadata.annotations.as_ref().unwrap()["note"];
    assert_eq!(note, "x kind: Pod");
}

#[test]
fn alias_across_list_items_is_read_as_a_whole() {
    // Cut into items, the second one loses its anchor; the loader must
    // notice and read the list in one piece instead of failing.
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: &m\n    name: n1\n- apiVersion: v1\n  kind: Node\n  metadata: *m\n";
    let set = parse(text);
    // Both items name n1: the later one is kept, with a warning.
    assert_eq!(names(&set), ["node /n1 @1"]);
    assert!(
        set.warnings[0].contains("Node n1 is repeated"),
        "{:?}",
        set.warnings
    );
}

#[test]
fn block_scalar_with_dashes_is_not_split() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    note: |\n      ---\n      --- x\n      ...\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n\n";
    let set = parse(text);
    assert_eq!(names(&set), ["svc default/a @1", "node /n @11"]);
    let note = &set.services[0].0.metadata.annotations.as_ref().unwrap()["note"];
    assert_eq!(note, "---\n--- x\n...\n");
}

#[test]
fn parallel_run_keeps_order_and_matches_sequential() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str("---\n");
        text.push_str(&SVC.replace("name: web", &format!("name: web{i}")));
        text.push_str("---\n");
        text.push_str(&SLICE.replace("name: web-abc", &format!("name: web{i}-abc")));
    }
    let seq = parse_with(&text, "in.yaml", usize::MAX, ObjectSet::default).unwrap();
    let par = parse_with(&text, "in.yaml", 0, ObjectSet::default).unwrap();
    assert_eq!(seq, par);
    assert_eq!(par.services.len(), 50);
    assert_eq!(par.services[49].0.metadata.name.as_deref(), Some("web49"));
    // An error in the second half is still the one reported.
    let bad = text.replacen("port: 8080\n  protocol: TCP\n", "port: x\n", 1);
    let e1 = parse_with(&bad, "in.yaml", 0, ObjectSet::default)
        .unwrap_err()
        .to_string();
    let e2 = parse_with(&bad, "in.yaml", usize::MAX, ObjectSet::default)
        .unwrap_err()
        .to_string();
    assert_eq!(e1, e2);
    assert!(
        e1.contains("EndpointSlice shop/web0-abc: ports[0].port"),
        "{e1}"
    );
}

#[test]
fn extend_appends_in_order() {
    let mut a = parse(SVC);
    let b = parse_objects(NODE, "b.yaml").unwrap();
    a.extend(b);
    assert_eq!(a.services.len(), 1);
    assert_eq!(a.nodes[0].1.to_string(), "b.yaml:1");
}

#[test]
fn load_objects_reports_missing_file_and_bad_utf8() {
    let err = load_objects("/nonexistent/objects.yaml").unwrap_err();
    assert_eq!(err.to_string(), "/nonexistent/objects.yaml: cannot read");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("No such file")));

    let path = std::env::temp_dir().join(format!("objects-utf8-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        b"apiVersion: v1\nkind: Node\nmetadata:\n  name: \xff\n",
    )
    .unwrap();
    let path = path.to_str().unwrap().to_string();
    let err = load_objects(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        err.to_string(),
        format!("{path}:4: input is not valid UTF-8")
    );
}

#[test]
fn objects_saved_as_utf16_are_read() {
    // `kubectl get ... -o yaml > objects.yaml` in Windows PowerShell 5.1 writes UTF-16LE
    // with a byte-order mark and CRLF; YAML allows it.
    let yaml = "apiVersion: v1\r\nkind: Node\r\nmetadata:\r\n  name: node-\u{e9}\r\n";
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(yaml.encode_utf16().flat_map(u16::to_le_bytes));
    let dir = std::env::temp_dir();
    let path = dir.join(format!("objects-utf16-{}.yaml", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap().to_string();
    let set = load_objects(&p).unwrap();
    assert_eq!(set.nodes.len(), 1);
    assert_eq!(set.nodes[0].0.metadata.name.as_deref(), Some("node-\u{e9}"));
    // Without the mark: refused, with what it looks like.
    std::fs::write(&path, &bytes[2..]).unwrap();
    let err = load_objects(&p).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        err.to_string(),
        format!(
            "{p}:1: input is not valid UTF-8; this looks like UTF-16 without a byte-order \
             mark; save the file as UTF-8 (PowerShell: `| Out-File -Encoding utf8`)"
        )
    );
}

/// xorshift64*: deterministic, no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let list = format!(
        "apiVersion: v1\nitems:\n{}{}kind: List\n",
        as_item(SVC),
        as_item(SLICE)
    );
    let json = serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&list).unwrap())
        .unwrap();
    let seeds = [
        format!("{SVC}---\n{SLICE}---\n{NODE}"),
        list,
        json,
        "%YAML 1.1\n---\n...\n--- |\n  text\n".to_string(),
    ];
    let alphabet: Vec<char> = " \n\t-:#'\"[]{},|>&*!%?.\\0aZ\u{e9}\u{feff}\r"
        .chars()
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 2];
    for round in 0..400 {
        let seed = &seeds[round % seeds.len()];
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(chars.len() + 1);
            match rng.below(6) {
                0 => {
                    let end = (at + rng.below(40)).min(chars.len());
                    chars.drain(at..end);
                }
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let c = alphabet[rng.below(alphabet.len())];
                        chars.insert(at.min(chars.len()), c);
                    }
                }
                2 => {
                    let end = (at + rng.below(80)).min(chars.len());
                    let copy: Vec<char> = chars[at..end].to_vec();
                    let to = rng.below(chars.len() + 1);
                    chars.splice(to..to, copy);
                }
                3 => chars.truncate(at),
                4 => {
                    if at < chars.len() {
                        chars[at] = alphabet[rng.below(alphabet.len())];
                    }
                }
                _ => {
                    // Pure noise now and then.
                    chars = (0..rng.below(200))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                }
            }
        }
        let text: String = chars.into_iter().collect();
        // libyaml also breaks lines at a lone CR.
        let lines = 1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count();
        // Alternate between the sequential and threaded runners.
        let threshold = if round % 2 == 0 { usize::MAX } else { 0 };
        match parse_with(&text, "fuzz.yaml", threshold, ObjectSet::default) {
            Ok(set) => {
                outcomes[0] += 1;
                let origins = set
                    .services
                    .iter()
                    .map(|o| &o.1)
                    .chain(set.endpoint_slices.iter().map(|o| &o.1))
                    .chain(set.nodes.iter().map(|o| &o.1));
                for o in origins {
                    assert!(
                        o.line >= 1 && o.line <= lines,
                        "origin {o} outside input:\n{text}"
                    );
                }
                for w in &set.warnings {
                    assert!(w.starts_with("fuzz.yaml:"), "{w}");
                }
            }
            Err(e) => {
                outcomes[1] += 1;
                let msg = e.to_string();
                assert!(msg.starts_with("fuzz.yaml:"), "{msg}");
                assert!(!matches!(e, LoadError::Internal { .. }), "{msg}\n{text}");
                let line = match &e {
                    LoadError::Syntax { line, .. } => Some(*line),
                    LoadError::Type(t) => Some(t.line),
                    _ => None,
                };
                if let Some(line) = line {
                    assert!(line >= 1 && line <= lines + 1, "{msg}\n{text}");
                }
            }
        }
    }
    // The mutations must exercise both outcomes to be worth anything.
    assert!(outcomes[0] > 20 && outcomes[1] > 20, "{outcomes:?}");
}
