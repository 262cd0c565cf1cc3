//! The two nfacct-backed counters of 1.31+ (spec §8 O2), read from the kernel objects at
//! each scrape as upstream does; an object that is missing or unreadable is left out.

use crate::iptables::nfacct;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Opts};

/// (metric name, help), in the order of [`nfacct::OBJECTS`].
pub const METRICS: [(&str, &str); 2] = [
    (
        "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
        "packets dropped by iptables to work around conntrack problems",
    ),
    (
        "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
        "Number of localhost nodeport packets accepted by iptables",
    ),
];

pub struct NfacctCollector {
    /// Kept for their descriptors.
    templates: Vec<IntCounter>,
    read: fn() -> [Option<u64>; 2],
}

impl NfacctCollector {
    /// Reads the objects of the calling thread's network namespace.
    pub fn new() -> NfacctCollector {
        NfacctCollector::with_reader(nfacct::read_counters)
    }

    pub fn with_reader(read: fn() -> [Option<u64>; 2]) -> NfacctCollector {
        NfacctCollector {
            templates: METRICS.iter().map(|(n, h)| counter(n, h)).collect(),
            read,
        }
    }
}

impl Default for NfacctCollector {
    fn default() -> Self {
        NfacctCollector::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name")
}

impl Collector for NfacctCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.templates.iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = (self.read)();
        METRICS
            .iter()
            .zip(values)
            .filter_map(|((name, help), v)| {
                let c = counter(name, help);
                c.inc_by(v?);
                Some(c.collect())
            })
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_show_the_kernel_counters_and_skip_missing_objects() {
        let r = prometheus::Registry::new();
        r.register(Box::new(NfacctCollector::with_reader(|| [Some(7), None])))
            .unwrap();
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total 7\n"),
            "{text}"
        );
        assert!(!text.contains("localhost_nodeports"), "{text}");
    }
}
