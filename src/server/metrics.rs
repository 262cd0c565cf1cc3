//! kube-proxy's Prometheus metrics (spec §6.6, §8.4 O1): names, types, labels, buckets and
//! help texts as upstream registers them (component-base prefixes help with `[ALPHA] `).

use crate::compat::Compat;
use crate::model::ip::IpFamily;
use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A metric v1.30 keeps once for all families and later releases once per IP family
/// (label `ip_family`, spec §8.4 O1).
#[derive(Clone)]
pub struct PerFamily<V> {
    vec: V,
    labeled: bool,
}

impl<B: MetricVecBuilder> PerFamily<MetricVec<B>> {
    /// `family`'s series; `labels`: the values of the metric's other labels, in order.
    pub fn of(&self, family: IpFamily, labels: &[&str]) -> B::M {
        if self.labeled {
            let mut l = labels.to_vec();
            l.push(family.api_name());
            self.vec.with_label_values(&l)
        } else {
            self.vec.with_label_values(labels)
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub sync_duration: PerFamily<HistogramVec>,
    pub full_sync_duration: PerFamily<HistogramVec>,
    pub partial_sync_duration: PerFamily<HistogramVec>,
    pub last_timestamp: PerFamily<GaugeVec>,
    pub last_queued_timestamp: PerFamily<GaugeVec>,
    pub network_programming: PerFamily<HistogramVec>,
    pub endpoint_changes_pending: IntGauge,
    pub endpoint_changes_total: IntCounter,
    pub service_changes_pending: IntGauge,
    pub service_changes_total: IntCounter,
    pub restore_failures: PerFamily<IntCounterVec>,
    pub partial_restore_failures: PerFamily<IntCounterVec>,
    pub iptables_total: PerFamily<IntGaugeVec>,
    pub iptables_last: PerFamily<IntGaugeVec>,
    pub no_local_endpoints: PerFamily<IntGaugeVec>,
    /// Ours, not upstream's: Services held back because iptables-restore rejected them.
    pub quarantined_services: IntGaugeVec,
    pub healthz_total: IntCounterVec,
    pub livez_total: IntCounterVec,
    /// Ours, not upstream's: problems found in objects, once per change of the object.
    pub invalid_object_fields: IntCounterVec,
    /// O3: the conntrack reconciler's (releases that have it; label `ip_family`).
    pub conntrack_reconciler: Option<ReconcilerMetrics>,
}

/// O3 (spec §8.4): one series per IP family, created by the first reconcile.
#[derive(Clone)]
pub struct ReconcilerMetrics {
    pub sync_duration: HistogramVec,
    pub deleted_entries: IntCounterVec,
}

impl ReconcilerMetrics {
    fn register(registry: &Registry) -> ReconcilerMetrics {
        let sync_duration = HistogramVec::new(
            HistogramOpts::new(
                name("conntrack_reconciler_sync_duration_seconds"),
                help("ReconcileConntrackFlowsLatency latency in seconds"),
            )
            .buckets(sync_buckets()),
            &["ip_family"],
        )
        .expect("valid histogram");
        let deleted_entries = IntCounterVec::new(
            Opts::new(
                name("conntrack_reconciler_deleted_entries_total"),
                help("Cumulative conntrack flows deleted by conntrack reconciler"),
            ),
            &["ip_family"],
        )
        .expect("valid");
        registry
            .register(Box::new(sync_duration.clone()))
            .expect("unique");
        registry
            .register(Box::new(deleted_entries.clone()))
            .expect("unique");
        ReconcilerMetrics {
            sync_duration,
            deleted_entries,
        }
    }

    /// One reconcile of `family`: how long it took and how many entries it deleted.
    pub fn observe(&self, family: IpFamily, seconds: f64, deleted: u64) {
        let f = [family.api_name()];
        self.sync_duration.with_label_values(&f).observe(seconds);
        self.deleted_entries.with_label_values(&f).inc_by(deleted);
    }
}

fn name(n: &str) -> String {
    format!("kubeproxy_{n}")
}

fn help(h: &str) -> String {
    format!("[ALPHA] {h}")
}

/// 0.001·2^k, k = 0..14.
pub fn sync_buckets() -> Vec<f64> {
    (0..15).map(|k| 0.001 * f64::from(1u32 << k)).collect()
}

/// 0.25, 0.5, 1..59, 60..115 step 5, 120..300 step 30.
pub fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..60).map(f64::from));
    b.extend((0..12).map(|i| f64::from(60 + 5 * i)));
    b.extend((0..7).map(|i| f64::from(120 + 30 * i)));
    b
}

impl Metrics {
    /// v1.30's metrics (no `ip_family` label).
    pub fn new() -> Metrics {
        Metrics::with_ip_family(false)
    }

    /// The metrics of the emulated release.
    pub fn for_compat(compat: &Compat) -> Metrics {
        let mut m = Metrics::with_ip_family(compat.metrics_ip_family_label);
        if compat.conntrack_cleanup == crate::compat::ConntrackRule::Reconcile {
            m.conntrack_reconciler = Some(ReconcilerMetrics::register(&m.registry));
        }
        m
    }

    /// `labeled`: the O1 metrics carry `ip_family`.
    pub fn with_ip_family(labeled: bool) -> Metrics {
        let registry = Registry::new();
        // v1.30's unlabeled series exist from the start; labeled ones on first use.
        let names = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut v = extra.to_vec();
            if labeled {
                v.push("ip_family");
            }
            v
        };
        let register = |m: Box<dyn prometheus::core::Collector>| {
            registry.register(m).expect("unique");
        };
        let hist = |n: &str, h: &str, b: Vec<f64>| {
            let m = HistogramVec::new(HistogramOpts::new(name(n), help(h)).buckets(b), &names(&[]))
                .expect("valid histogram");
            register(Box::new(m.clone()));
            if !labeled {
                m.with_label_values::<&str>(&[]);
            }
            PerFamily { vec: m, labeled }
        };
        let sync_duration = hist(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            sync_buckets(),
        );
        let full_sync_duration = hist(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            sync_buckets(),
        );
        let partial_sync_duration = hist(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            sync_buckets(),
        );
        let network_programming = hist(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            network_programming_buckets(),
        );
        let gauge = |n: &str, h: &str| {
            let m = GaugeVec::new(Opts::new(name(n), help(h)), &names(&[])).expect("valid");
            register(Box::new(m.clone()));
            if !labeled {
                m.with_label_values::<&str>(&[]);
            }
            PerFamily { vec: m, labeled }
        };
        let last_timestamp = gauge(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
        );
        let last_queued_timestamp = gauge(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
        );
        let igauge = |n: &str, h: &str| {
            let m = IntGauge::with_opts(Opts::new(name(n), help(h))).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
        };
        let endpoint_changes_pending = igauge(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
        );
        let service_changes_pending = igauge(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
        );
        let counter = |n: &str, h: &str| {
            let m = IntCounter::with_opts(Opts::new(name(n), help(h))).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
        };
        let endpoint_changes_total = counter(
            "sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
        );
        let service_changes_total = counter(
            "sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
        );
        let family_counter = |n: &str, h: &str| {
            let m = IntCounterVec::new(Opts::new(name(n), help(h)), &names(&[])).expect("valid");
            register(Box::new(m.clone()));
            if !labeled {
                m.with_label_values::<&str>(&[]);
            }
            PerFamily { vec: m, labeled }
        };
        let restore_failures = family_counter(
            "sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
        );
        let partial_restore_failures = family_counter(
            "sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
        );
        let family_gauge_vec = |n: &str, h: &str, l: &'static str| {
            let m = IntGaugeVec::new(Opts::new(name(n), help(h)), &names(&[l])).expect("valid");
            register(Box::new(m.clone()));
            PerFamily { vec: m, labeled }
        };
        let iptables_total = family_gauge_vec(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            "table",
        );
        let iptables_last = family_gauge_vec(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            "table",
        );
        let no_local_endpoints = family_gauge_vec(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            "traffic_policy",
        );
        let igauge_vec = |n: &str, h: &str, l: &str| {
            let m = IntGaugeVec::new(Opts::new(name(n), help(h)), &[l]).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
        };
        let quarantined_services = igauge_vec(
            "rs_sync_proxy_rules_quarantined_services",
            "Services whose rules iptables-restore rejected, kept as last applied until they change",
            "ip_family",
        );
        let counter_vec = |n: &str, h: &str| {
            let m = IntCounterVec::new(Opts::new(name(n), help(h)), &["code"]).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
        };
        let healthz_total = counter_vec(
            "proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
        );
        let livez_total = counter_vec("proxy_livez_total", "Cumulative proxy livez HTTP status");
        let invalid_object_fields = IntCounterVec::new(
            Opts::new(
                name("rs_invalid_object_fields_total"),
                "Object fields ignored, rewritten or dropped (an endpoint, a port) because they failed validation, counted once per change of the object",
            ),
            &["kind", "field"],
        )
        .expect("valid");
        registry
            .register(Box::new(invalid_object_fields.clone()))
            .expect("unique");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Metrics {
            registry,
            sync_duration,
            full_sync_duration,
            partial_sync_duration,
            last_timestamp,
            last_queued_timestamp,
            network_programming,
            endpoint_changes_pending,
            endpoint_changes_total,
            service_changes_pending,
            service_changes_total,
            restore_failures,
            partial_restore_failures,
            iptables_total,
            iptables_last,
            no_local_endpoints,
            quarantined_services,
            healthz_total,
            livez_total,
            invalid_object_fields,
            conntrack_reconciler: None,
        }
    }

    /// Adds the nfacct-backed counters (releases after 1.30).
    pub fn register_nfacct(&self) {
        let c = super::nfacct_metrics::NfacctCollector::new();
        if let Err(e) = self.registry.register(Box::new(c)) {
            tracing::warn!(error = %e, "cannot register the nfacct metrics");
        }
    }

    /// The text exposition format served at /metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Seconds since the Unix epoch, for the timestamp gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upstreams() {
        let b = sync_buckets();
        assert_eq!(b.len(), 15);
        assert_eq!(b[0], 0.001);
        assert_eq!(b[14], 16.384);
        let n = network_programming_buckets();
        assert_eq!(&n[..3], &[0.25, 0.5, 1.0]);
        assert_eq!(n[60], 59.0);
        assert_eq!(&n[61..63], &[60.0, 65.0]);
        assert_eq!(n[72], 115.0);
        assert_eq!(&n[73..], &[120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0]);
    }

    #[test]
    fn ip_family_label_only_when_asked() {
        let m = Metrics::new();
        m.sync_duration.of(IpFamily::V6, &[]).observe(0.5);
        m.no_local_endpoints.of(IpFamily::V6, &["internal"]).set(2);
        let text = m.render();
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 2\n"), "{text}");
        assert!(!text.contains("ip_family"), "{text}");
        let m = Metrics::for_compat(&Compat::v1_35());
        m.sync_duration.of(IpFamily::V6, &[]).observe(0.5);
        m.no_local_endpoints.of(IpFamily::V4, &["internal"]).set(2);
        m.service_changes_total.inc();
        let text = m.render();
        assert!(
            text.contains(
                "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv6\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"} 2\n"), "{text}");
        // Not among O1's: unlabeled in every release.
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_service_changes_total 1\n"),
            "{text}"
        );
        // A family that never synced has no series.
        assert!(!text.contains("ip_family=\"IPv4\"} 1\n"), "{text}");
    }

    #[test]
    fn exposition_names_and_help() {
        let m = Metrics::new();
        m.iptables_total.of(IpFamily::V4, &["nat"]).set(7);
        m.healthz_total.with_label_values(&["200"]).inc();
        m.invalid_object_fields
            .with_label_values(&["EndpointSlice", "endpoints.addresses"])
            .inc();
        let text = m.render();
        assert!(text.contains("# HELP kubeproxy_sync_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds\n"), "{text}");
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"} 7\n"));
        assert!(text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 1\n"));
        assert!(text.contains("kubeproxy_rs_invalid_object_fields_total{field=\"endpoints.addresses\",kind=\"EndpointSlice\"} 1\n"), "{text}");
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 0\n")
        );
    }
}
