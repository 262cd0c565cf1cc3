//! A service port's rules in the chains shared by all services (B1–B6).

use super::part::Shared;
use super::port::PortCtx;
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
                b.push_str("-A KUBE-PROXY-FIREWALL -m comment --comment \"");
                b.push_str(&sp.spn);
                b.push_str(" traffic not accepted by ");
                b.push_str(self.fw);
                b.push('"');
                self.match_dest(b, &ip, self.port);
                b.push_str(" -j DROP\n");
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
                    b.push_str("-A KUBE-NODEPORTS -m comment --comment ");
                    b.push_str(&sp.spn);
                    self.match_protocol(b);
                    b.push_str(" -d 127.0.0.0/8 --dport ");
                    b.push_str(&np);
                    b.push_str(" -m nfacct --nfacct-name ");
                    b.push_str(crate::rules::options::NFACCT_LOCALHOST_NODEPORTS);
                    b.push_str(" -j ");
                    b.push_str(self.ext);
                    b.push('\n');
                }
                b.push_str("-A KUBE-NODEPORTS -m comment --comment ");
                b.push_str(&sp.spn);
                self.port_jump(b, &np, self.ext);
            }
            if !self.has_external {
                let b = filter.buf(sh.f_external);
                self.head(b, "KUBE-EXTERNAL-SERVICES", what);
                b.push_str(" -m addrtype --dst-type LOCAL");
                self.port_jump(b, &np, target);
            }
        }
        // B6
        if sp.health_check_node_port != 0 {
            let b = filter.buf(sh.f_nodeports);
            self.head(b, "KUBE-NODEPORTS", "health check node port");
            b.push_str(" -m tcp -p tcp --dport ");
            b.push_str(&sp.health_check_node_port.to_string());
            b.push_str(" -j ACCEPT\n");
        }
    }
}
