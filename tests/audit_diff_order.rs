//! `diff` on dumps shaped like real nodes: upstream's Go map order in the shared chains,
//! other software's chains, older hash forms, newer kube-proxy releases.

#[path = "support/dumps.rs"]
mod dumps;

use dumps::{port_key, rule_chain, shared_order_changed, shuffle_save};
use kube_proxy_rs::audit::diff::{diff, expected_state, Expected, Kind, Report};
use kube_proxy_rs::audit::parse::Ruleset;
use kube_proxy_rs::config;
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::source::objects::load_objects;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> PathBuf {
    root().join("golden/upstream")
}

fn v135() -> PathBuf {
    let p = root().join("golden/upstream-v1.35");
    assert!(p.is_dir(), "{} is missing", p.display());
    p
}

/// (case dir, objects file, save file name relative to the case, family) of every state.
fn states() -> Vec<(PathBuf, PathBuf, String, IpFamily)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        out.push((
            d.clone(),
            d.join("objects.yaml"),
            "expected.save".into(),
            IpFamily::V4,
        ));
        if d.join("expected-ipv6.save").exists() {
            out.push((
                d.clone(),
                d.join("objects.yaml"),
                "expected-ipv6.save".into(),
                IpFamily::V6,
            ));
        }
        for n in 2..10 {
            if d.join(format!("step-{n}.save")).exists() {
                out.push((
                    d.clone(),
                    d.join(format!("step-{n}/objects.yaml")),
                    format!("step-{n}.save"),
                    IpFamily::V4,
                ));
            }
        }
    }
    out
}

fn expected(dir: &Path, objects: &Path, family: IpFamily) -> Expected {
    let cfg = config::load_config(&dir.join("config.yaml")).unwrap();
    let set = load_objects(objects.to_str().unwrap()).unwrap();
    expected_state(
        kube_proxy_rs::offline::OfflineProxier::new(
            cfg,
            kube_proxy_rs::compat::Compat::v1_30(),
            family,
        ),
        &set,
        &mut Vec::new(),
    )
}

fn run(e: &Expected, text: &str) -> Report {
    diff(e, &Ruleset::parse(text).unwrap())
}

#[test]
fn upstream_map_order_in_shared_chains_is_equal() {
    let mut shuffled = 0;
    for (dir, objects, save, family) in states() {
        let e = expected(&dir, &objects, family);
        let text = std::fs::read_to_string(dir.join(&save)).unwrap();
        for seed in 1..=3 {
            let s = shuffle_save(&text, seed);
            if shared_order_changed(&text, &s) {
                shuffled += 1;
            }
            let r = run(&e, &s);
            assert!(
                r.equal,
                "{}/{save} seed {seed}:\n{}",
                dir.display(),
                r.to_text()
            );
        }
    }
    assert!(
        shuffled > 40,
        "only {shuffled} dumps had their order changed"
    );
}

/// The first two rules of an SVC chain with several probability rules, swapped.
fn swap_probability_rules(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(c) = rule_chain(l) else { continue };
        if !c.starts_with("KUBE-SVC-") || !l.contains("--probability") {
            continue;
        }
        if lines.get(i + 1).and_then(|n| rule_chain(n)) == Some(c)
            && lines[i + 1].contains("--probability")
        {
            let mut v = lines.clone();
            v.swap(i, i + 1);
            return (v.join("\n") + "\n", c.to_string());
        }
    }
    panic!("no SVC chain with two probability rules");
}

#[test]
fn order_that_matters_is_still_reported() {
    let dir = corpus().join("realistic-cluster");
    let e = expected(&dir, &dir.join("objects.yaml"), IpFamily::V4);
    let text = shuffle_save(
        &std::fs::read_to_string(dir.join("expected.save")).unwrap(),
        7,
    );
    assert!(run(&e, &text).equal);

    // The probability rules of one SVC chain swapped: endpoint shares change.
    let (swapped, svc) = swap_probability_rules(&text);
    let r = run(&e, &swapped);
    let fs: Vec<_> = r.findings().collect();
    assert!(!fs.is_empty(), "swap in {svc} not reported");
    let comment = text
        .lines()
        .find(|l| rule_chain(l) == Some(svc.as_str()) && l.contains("--comment"))
        .unwrap();
    let spn = comment.split("--comment \"").nth(1).unwrap();
    let spn = spn.split([' ', '"']).next().unwrap();
    for (g, f) in &fs {
        assert_eq!((f.kind, f.chain.as_str()), (Kind::MovedRule, svc.as_str()));
        assert!(g.starts_with(&format!("{spn} ")), "{g} vs {spn}");
    }

    // The NodePort catch-all moved up: it would swallow every later service's node-local
    // traffic.
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines
        .iter()
        .position(|l| l.starts_with("-A KUBE-SERVICES ") && l.ends_with("-j KUBE-NODEPORTS"))
        .unwrap();
    let nat = lines.iter().position(|l| *l == "*nat").unwrap();
    let first = nat
        + lines[nat..]
            .iter()
            .position(|l| l.starts_with("-A KUBE-SERVICES "))
            .unwrap();
    let mut v = lines.clone();
    let t = v.remove(tail);
    v.insert(first, t);
    let r = run(&e, &(v.join("\n") + "\n"));
    let fs: Vec<_> = r.findings().collect();
    assert_eq!(fs.len(), 1, "{}", r.to_text());
    assert_eq!((fs[0].0, fs[0].1.kind), ("", Kind::MovedRule));
    assert!(
        fs[0].1.detail.as_deref().unwrap().contains("last rule"),
        "{}",
        r.to_text()
    );

    // Two rules of one service port in a shared chain swapped (cluster IP before the
    // external IP in upstream's fixed per-port order).
    let mut by_port: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(nat) {
        if rule_chain(l) != Some("KUBE-SERVICES") {
            continue;
        }
        if let Some(k) = port_key(l) {
            match by_port.iter_mut().find(|(p, _)| *p == k) {
                Some((_, v)) => v.push(i),
                None => by_port.push((k, vec![i])),
            }
        }
    }
    let (port, idx) = by_port
        .iter()
        .find(|(_, v)| v.len() >= 2)
        .expect("a port with two KUBE-SERVICES rules");
    let mut v = lines.clone();
    v.swap(idx[0], idx[1]);
    let r = run(&e, &(v.join("\n") + "\n"));
    let fs: Vec<_> = r.findings().collect();
    assert!(!fs.is_empty(), "swap within {port} not reported");
    for (g, f) in fs {
        assert_eq!((g, f.kind), (port.as_str(), Kind::MovedRule));
    }
}

/// What kind, kubeadm and CNI plugins put next to kube-proxy's rules.
fn add_other_software(save: &str) -> String {
    let mut s = String::from(
        "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Mon Jul  1 10:00:00 2024\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n\
         :KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n",
    );
    for block in save.split_inclusive("COMMIT\n") {
        if let Some(rest) = block.strip_prefix("*filter\n") {
            s += "*filter\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n\
                  :KUBE-ROUTER-INPUT - [0:0]\n:KUBE-NWPLCY-DEFAULT - [0:0]\n:cali-FORWARD - [0:0]\n";
            s += rest.trim_end_matches("COMMIT\n");
            s += "-A INPUT -m comment --comment \"kube-router netpol\" -j KUBE-ROUTER-INPUT\n\
                  -A KUBE-ROUTER-INPUT -j KUBE-NWPLCY-DEFAULT\n\
                  -A KUBE-NWPLCY-DEFAULT -m mark --mark 0x10000/0x10000 -j RETURN\n\
                  -A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n\
                  -A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n\
                  -A KUBE-FIREWALL -m comment --comment \"kubernetes firewall for dropping marked packets\" -m mark --mark 0x8000/0x8000 -j DROP\n\
                  -A OUTPUT -j KUBE-FIREWALL\n\
                  COMMIT\n";
        } else if let Some(rest) = block.strip_prefix("*nat\n") {
            s += "*nat\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-MARK-DROP - [0:0]\n\
                  :KIND-MASQ-AGENT - [0:0]\n:DOCKER_OUTPUT - [0:0]\n:DOCKER_POSTROUTING - [0:0]\n";
            s += rest.trim_end_matches("COMMIT\n");
            s += "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000\n\
                  -A OUTPUT -d 172.18.0.1/32 -j DOCKER_OUTPUT\n\
                  -A POSTROUTING -d 172.18.0.1/32 -j DOCKER_POSTROUTING\n\
                  -A POSTROUTING -m addrtype ! --dst-type LOCAL -m comment --comment \"kind-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom KIND-MASQ-AGENT chain\" -j KIND-MASQ-AGENT\n\
                  -A DOCKER_OUTPUT -d 172.18.0.1/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:41051\n\
                  -A KIND-MASQ-AGENT -d 10.244.0.0/16 -m comment --comment \"kind-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
                  -A KIND-MASQ-AGENT -m comment --comment \"kind-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE\n\
                  COMMIT\n";
        } else {
            s += block;
        }
    }
    s
}

#[test]
fn other_softwares_rules_are_never_findings() {
    let dir = corpus().join("realistic-cluster");
    let e = expected(&dir, &dir.join("objects.yaml"), IpFamily::V4);
    let save = std::fs::read_to_string(dir.join("expected.save")).unwrap();
    let node = shuffle_save(&add_other_software(&save), 11);
    assert!(node.contains("KIND-MASQ-AGENT") && node.contains("marked packets"));
    let r = run(&e, &node);
    assert!(r.equal, "{}", r.to_text());
    // kube-proxy's own rule in the chain it shares with kubelet is still checked.
    let without: String = node
        .lines()
        .filter(|l| !l.contains("block incoming localnet connections"))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = run(&e, &without);
    let fs: Vec<_> = r.findings().collect();
    assert_eq!(fs.len(), 1, "{}", r.to_text());
    assert_eq!(
        (fs[0].1.kind, fs[0].1.chain.as_str()),
        (Kind::MissingRule, "KUBE-FIREWALL")
    );
    // A foreign chain jumping into kube-proxy's chains is kube-proxy's business.
    let hijack = node.replace(
        "-A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n",
        "-A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n-A cali-FORWARD -j KUBE-SERVICES\n",
    );
    let r = run(&e, &hijack);
    let fs: Vec<_> = r.findings().collect();
    assert_eq!(fs.len(), 1, "{}", r.to_text());
    assert_eq!(
        (fs[0].1.kind, fs[0].1.chain.as_str()),
        (Kind::ExtraRule, "cali-FORWARD")
    );
}

const HOSTNAMES: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n\
status:\n  addresses:\n  - type: InternalIP\n    address: 192.168.10.11\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: hostnames\n  namespace: default\n\
spec:\n  clusterIP: 10.96.0.60\n  clusterIPs:\n  - 10.96.0.60\n  ports:\n  - port: 80\n    targetPort: 9376\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hostnames-abc\n  namespace: default\n\
  labels:\n    kubernetes.io/service-name: hostnames\naddressType: IPv4\nendpoints:\n\
- addresses:\n  - 10.244.1.5\n  conditions:\n    ready: true\nports:\n- port: 9376\n";

#[test]
fn older_hash_form_chains_are_grouped_with_their_port() {
    let tmp = std::env::temp_dir().join(format!("audit-hostnames-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("objects.yaml"), HOSTNAMES).unwrap();
    std::fs::write(
        tmp.join("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         hostnameOverride: node-a\nclusterCIDR: 10.244.0.0/16\n",
    )
    .unwrap();
    let e = expected(&tmp, &tmp.join("objects.yaml"), IpFamily::V4);
    std::fs::remove_dir_all(&tmp).ok();
    let live = format!("{}{}", jumps::ensure_text(), e.payload);
    assert!(run(&e, &live).equal);
    // Leftovers of a 1.9-era proxy (hashes by hand: base32(sha256(input))[..16]):
    // "default/hostnames:tcp" = NWV5X2332I4OT4T3, "default/hostnames:tcp10.244.1.5:9376" =
    // R7FMCUVNAW3KLO3A (no comments), and an endpoint chain known only by its comment.
    let tail = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports";
    let old = live.replacen(
        tail,
        &format!(
            "-A KUBE-SERVICES -d 10.96.0.60/32 -p tcp -m comment --comment \"default/hostnames: cluster IP\" -m tcp --dport 80 -j KUBE-SVC-NWV5X2332I4OT4T3\n{tail}"
        ),
        1,
    );
    let old = old.replacen(
        "*nat\n",
        "*nat\n:KUBE-SVC-NWV5X2332I4OT4T3 - [0:0]\n:KUBE-SEP-R7FMCUVNAW3KLO3A - [0:0]\n\
         :KUBE-SEP-ZZZZZZZZZZZZZZZZ - [0:0]\n\
         -A KUBE-SVC-NWV5X2332I4OT4T3 -m comment --comment \"default/hostnames:\" -j KUBE-SEP-R7FMCUVNAW3KLO3A\n\
         -A KUBE-SEP-R7FMCUVNAW3KLO3A -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:9376\n\
         -A KUBE-SEP-ZZZZZZZZZZZZZZZZ -s 10.244.1.6/32 -m comment --comment \"default/hostnames:\" -j KUBE-MARK-MASQ\n",
        1,
    );
    let r = run(&e, &old);
    assert!(!r.equal);
    let groups: Vec<&String> = r.groups.keys().collect();
    assert_eq!(groups, vec!["default/hostnames tcp"], "{}", r.to_text());
    let chains: Vec<&str> = r.findings().map(|(_, f)| f.chain.as_str()).collect();
    for c in [
        "KUBE-SERVICES",
        "KUBE-SVC-NWV5X2332I4OT4T3",
        "KUBE-SEP-R7FMCUVNAW3KLO3A",
        "KUBE-SEP-ZZZZZZZZZZZZZZZZ",
    ] {
        assert!(chains.contains(&c), "{c} not reported: {chains:?}");
    }
}

#[test]
fn newer_kube_proxy_dumps_are_reported_once() {
    let mut compared = 0;
    let mut with_nfacct = 0;
    for (dir, objects, save, family) in states() {
        let case = dir.file_name().unwrap().to_str().unwrap().to_string();
        let newer = v135().join(&case).join(&save);
        let text = std::fs::read_to_string(&newer).unwrap();
        let nfacct = text.lines().filter(|l| l.contains("-m nfacct")).count();
        let e = expected(&dir, &objects, family);
        let r = run(&e, &shuffle_save(&text, 5));
        with_nfacct += usize::from(nfacct > 0);
        // Without an INVALID drop rule or a NodePort (tcpBeLiberal) nothing tells the
        // releases apart.
        assert_eq!(
            r.notes.len(),
            usize::from(nfacct > 0),
            "{}",
            newer.display()
        );
        assert!(
            nfacct == 0
                || r.notes[0].contains("kube-proxy ≥ 1.31")
                    && r.notes[0].contains(&format!("{nfacct} nfacct difference(s) suppressed")),
            "{}",
            r.notes[0]
        );
        if case == "topology-hints" {
            // §8.2 P3: the newer release picks endpoints by hints for this port.
            let groups: Vec<&String> = r.groups.keys().collect();
            assert_eq!(
                groups,
                vec!["apps/no-annotation:http tcp"],
                "{}",
                r.to_text()
            );
        } else {
            assert!(r.equal, "{}:\n{}", newer.display(), r.to_text());
        }
        compared += 1;
    }
    assert!(
        compared > 45 && with_nfacct > 40,
        "{compared} {with_nfacct}"
    );
}

#[test]
fn upstream_order_at_2000_services() {
    let dir = std::env::temp_dir().join(format!("audit-2000-5-{}", std::process::id()));
    let ok = std::process::Command::new("python3")
        .arg(root().join("hack/gen-cluster.py"))
        .args(["2000", "5"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let e = expected(&dir, &dir.join("objects.yaml"), IpFamily::V4);
    std::fs::remove_dir_all(&dir).ok();
    let canonical = format!("{}{}", jumps::ensure_text(), e.payload);
    let node = shuffle_save(&canonical, 2000);
    assert!(shared_order_changed(&canonical, &node));
    let r = run(&e, &node);
    assert!(r.equal, "{} findings", r.count());
    assert!(r.expected_rules > 20_000);
}
