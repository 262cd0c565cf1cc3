//! kube-proxy's v1.30 Prometheus metrics (spec §6.6): names, types, labels, buckets and
//! help texts as upstream registers them (component-base prefixes help with `[ALPHA] `).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub last_timestamp: prometheus::Gauge,
    pub last_queued_timestamp: prometheus::Gauge,
    pub network_programming: Histogram,
    pub endpoint_changes_pending: IntGauge,
    pub endpoint_changes_total: IntCounter,
    pub service_changes_pending: IntGauge,
    pub service_changes_total: IntCounter,
    pub restore_failures: IntCounter,
    pub partial_restore_failures: IntCounter,
    pub iptables_total: IntGaugeVec,
    pub iptables_last: IntGaugeVec,
    pub no_local_endpoints: IntGaugeVec,
    /// Ours, not upstream's: Services held back because iptables-restore rejected them.
    pub quarantined_services: IntGaugeVec,
    pub healthz_total: IntCounterVec,
    pub livez_total: IntCounterVec,
    /// Ours, not upstream's: problems found in objects, once per change of the object.
    pub invalid_object_fields: IntCounterVec,
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
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let hist = |n: &str, h: &str, b: Vec<f64>| {
            let m = Histogram::with_opts(HistogramOpts::new(name(n), help(h)).buckets(b))
                .expect("valid histogram");
            registry.register(Box::new(m.clone())).expect("unique");
            m
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
            let m = prometheus::Gauge::with_opts(Opts::new(name(n), help(h))).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
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
        let restore_failures = counter(
            "sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
        );
        let partial_restore_failures = counter(
            "sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
        );
        let igauge_vec = |n: &str, h: &str, l: &str| {
            let m = IntGaugeVec::new(Opts::new(name(n), help(h)), &[l]).expect("valid");
            registry.register(Box::new(m.clone())).expect("unique");
            m
        };
        let iptables_total = igauge_vec(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            "table",
        );
        let iptables_last = igauge_vec(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            "table",
        );
        let no_local_endpoints = igauge_vec(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            "traffic_policy",
        );
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
    fn exposition_names_and_help() {
        let m = Metrics::new();
        m.iptables_total.with_label_values(&["nat"]).set(7);
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
