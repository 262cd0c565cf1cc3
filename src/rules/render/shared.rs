//! A service port's rules in the chains shared by all services (B1–B6).

use super::part::Shared;
use super::port::PortCtx;
use crate::rules::table::Put;
use crate::rules::table::Table;

impl PortCtx<'_> {
    /// Rules in the chains shared by all services (B1–B6): always written.
    pub(super) fn write_shared(&self, filter: &mut Table, nat: &mut Table, sh: &Shared) {
        let sp = self.sp;
        // Used only where the internal/external traffic has no endpoint to go to.
        let (what, target) = self.filter_verdict();
        // B1 / B1'
        if self.has_internal {
            self.dest_rule(
                nat.buf(sh.n_services),
                "KUBE-SERVICES",
                "cluster IP",
                self.cluster_ip,
                self.internal_chain(),
            );
        } else {
            self.dest_rule(
                filter.buf(sh.f_services),
                "KUBE-SERVICES",
                what,
                self.cluster_ip,
                target,
            );
        }
        // B2 / B2'
        for ip in &sp.external_ips {
            let ip = ip.to_string();
            if self.has_any {
                self.dest_rule(
                    nat.buf(sh.n_services),
                    "KUBE-SERVICES",
                    "external IP",
                    &ip,
                    self.ext,
                );
            }
            if !self.has_external {
                self.dest_rule(
                    filter.buf(sh.f_external),
                    "KUBE-EXTERNAL-SERVICES",
                    what,
                    &ip,
                    target,
                );
            }
        }
        // B3 / B3'
        let lb_chain = if self.uses_fw { self.fw } else { self.ext };
        for ip in &sp.load_balancer_vips {
            let ip = ip.to_string();
            if self.has_any {
                self.dest_rule(
                    nat.buf(sh.n_services),
                    "KUBE-SERVICES",
                    "loadbalancer IP",
                    &ip,
                    lb_chain,
                );
            }
            if self.uses_fw {
                let b = filter.buf(sh.f_firewall);
                b.put("-A KUBE-PROXY-FIREWALL -m comment --comment \"");
                b.put(&sp.spn);
                b.put(" traffic not accepted by ");
                b.put(self.fw);
                b.push('"');
                self.match_dest(b, &ip, self.port);
                b.put(" -j DROP\n");
            }
        }
        // B4
        if !self.has_external {
            for ip in &sp.load_balancer_vips {
                let ip = ip.to_string();
                self.dest_rule(
                    filter.buf(sh.f_external),
                    "KUBE-EXTERNAL-SERVICES",
                    what,
                    &ip,
                    target,
                );
            }
        }
        // B5 / B5'
        if sp.node_port != 0 {
            let np = sp.node_port.to_string();
            if self.has_any {
                let b = nat.buf(sh.n_nodeports);
                // §8 P2: localhost NodePort traffic counted first.
                if self.opts.localhost_nodeports && self.opts.nfacct_rules() {
                    b.put("-A KUBE-NODEPORTS -m comment --comment ");
                    b.put(&sp.spn);
                    self.match_protocol(b);
                    b.put(" -d 127.0.0.0/8 --dport ");
                    b.put(&np);
                    b.put(" -m nfacct --nfacct-name ");
                    b.put(crate::rules::options::NFACCT_LOCALHOST_NODEPORTS);
                    b.put(" -j ");
                    b.put(self.ext);
                    b.push('\n');
                }
                b.put("-A KUBE-NODEPORTS -m comment --comment ");
                b.put(&sp.spn);
                self.port_jump(b, &np, self.ext);
            }
            if !self.has_external {
                let b = filter.buf(sh.f_external);
                self.head(b, "KUBE-EXTERNAL-SERVICES", what);
                b.put(" -m addrtype --dst-type LOCAL");
                self.port_jump(b, &np, target);
            }
        }
        // B6
        if sp.health_check_node_port != 0 {
            let b = filter.buf(sh.f_nodeports);
            self.head(b, "KUBE-NODEPORTS", "health check node port");
            b.put(" -m tcp -p tcp --dport ");
            b.put(&sp.health_check_node_port.to_string());
            b.put(" -j ACCEPT\n");
        }
    }
}
