//! One service port's endpoint selection and the rule-text helpers its rules share.

use crate::model::service::ServicePort;
use crate::model::topology::{categorize_reusing, Categorized, TopologyGates};
use crate::rules::options::ProxierOptions;
use crate::rules::table::Put;

/// One service port with its endpoint selection and chain names resolved (§3.2).
pub(super) struct PortCtx<'a> {
    pub(super) sp: &'a ServicePort,
    pub(super) opts: &'a ProxierOptions,
    pub(super) p: &'static str,
    pub(super) cluster_ip: &'a str,
    pub(super) port: &'a str,
    pub(super) categorized: Categorized<'a>,
    pub(super) has_any: bool,
    pub(super) has_internal: bool,
    pub(super) has_external: bool,
    pub(super) uses_svc: bool,
    pub(super) uses_svl: bool,
    pub(super) uses_ext: bool,
    pub(super) uses_fw: bool,
    pub(super) svc: &'a str,
    pub(super) svl: &'a str,
    pub(super) ext: &'a str,
    pub(super) fw: &'a str,
    pub(super) large: bool,
}

impl<'a> PortCtx<'a> {
    pub(super) fn new(
        sp: &'a ServicePort,
        zone: Option<&str>,
        gates: TopologyGates,
        opts: &'a ProxierOptions,
        large: bool,
        reuse: Categorized<'a>,
    ) -> PortCtx<'a> {
        let c = categorize_reusing(sp, &sp.endpoints, zone, gates, reuse);
        let has_any = c.has_any;
        let has_internal = has_any && !(sp.internal_policy_local && c.local.is_empty());
        let has_external = has_any && !(sp.external_policy_local && c.local.is_empty());
        PortCtx {
            sp,
            opts,
            p: sp.protocol.as_str(),
            cluster_ip: &sp.cluster_ip_text,
            port: &sp.port_text,
            uses_svc: !c.cluster.is_empty() && sp.uses_cluster_endpoints(),
            uses_svl: !c.local.is_empty() && sp.uses_local_endpoints(),
            uses_ext: has_any && sp.externally_accessible(),
            uses_fw: has_any
                && !sp.load_balancer_vips.is_empty()
                && !sp.load_balancer_source_ranges.is_empty(),
            categorized: c,
            has_any,
            has_internal,
            has_external,
            svc: &sp.chains.svc,
            svl: &sp.chains.svl,
            ext: &sp.chains.ext,
            fw: &sp.chains.fw,
            large,
        }
    }

    pub(super) fn internal_chain(&self) -> &'a str {
        if self.sp.internal_policy_local {
            self.svl
        } else {
            self.svc
        }
    }

    pub(super) fn external_policy_chain(&self) -> &'a str {
        if self.sp.external_policy_local {
            self.svl
        } else {
            self.svc
        }
    }

    /// ` -m <p> -p <p>`
    pub(super) fn match_protocol(&self, b: &mut String) {
        b.put(" -m ");
        b.put(self.p);
        b.put(" -p ");
        b.put(self.p);
    }

    /// ` -m <p> -p <p> -d <ip> --dport <port>`
    pub(super) fn match_dest(&self, b: &mut String, ip: &str, port: &str) {
        self.match_protocol(b);
        b.put(" -d ");
        b.put(ip);
        b.put(" --dport ");
        b.put(port);
    }

    /// `-A <chain> -m comment --comment "<spn> <what>"`
    pub(super) fn head(&self, b: &mut String, chain: &str, what: &str) {
        b.put("-A ");
        b.put(chain);
        b.put(" -m comment --comment \"");
        b.put(&self.sp.spn);
        b.push(' ');
        b.put(what);
        b.push('"');
    }

    /// Comment suffix and target of the filter rule for traffic with nowhere to go.
    pub(super) fn filter_verdict(&self) -> (&'static str, &'static str) {
        if !self.has_any {
            ("has no endpoints", "REJECT")
        } else {
            ("has no local endpoints", "DROP")
        }
    }

    /// `-A <chain> -m comment --comment "<spn> <what>" -m <p> -p <p> -d <ip> --dport <port> -j <target>`:
    /// the shape of every per-destination rule in the shared chains.
    pub(super) fn dest_rule(
        &self,
        b: &mut String,
        chain: &str,
        what: &str,
        ip: &str,
        target: &str,
    ) {
        self.head(b, chain, what);
        self.match_dest(b, ip, self.port);
        b.put(" -j ");
        b.put(target);
        b.push('\n');
    }

    /// ` -m <p> -p <p> --dport <port> -j <target>` for NodePort-style rules.
    pub(super) fn port_jump(&self, b: &mut String, port: &str, target: &str) {
        self.match_protocol(b);
        b.put(" --dport ");
        b.put(port);
        b.put(" -j ");
        b.put(target);
        b.push('\n');
    }
}
