//! Full or partial? The decision upstream makes before each sync (spec §5.5), sans IO.

use crate::compat::{Compat, NodeChangeRule, PeriodicFullSync};
use crate::model::node::ZONE_LABEL;
use crate::model::{ClusterModel, NsName};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::rules::render::LARGE_CLUSTER_ENDPOINTS;

/// What the next sync must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    pub full: bool,
    /// Services whose ports or endpoints changed since the last sync (all of them on the
    /// first sync).
    pub changed: HashSet<NsName>,
    /// Whether to list the kernel's nat chains and delete stale ones this time.
    pub scan_stale_chains: bool,
}

/// Remembers what the last sync saw; derives the next [`SyncPlan`] from a new model.
#[derive(Debug)]
pub struct SyncTracker {
    need_full_sync: bool,
    last_model: Option<ClusterModel>,
    node_labels: Option<BTreeMap<String, String>>,
    sync_period: Duration,
    last_stale_scan: Option<Duration>,
    /// Whether the last sync succeeded (then `last_model` is what the kernel holds).
    last_ok: bool,
    /// The last successful sync's model while `last_model` is a failed one.
    last_applied: Option<ClusterModel>,
    compat: Compat,
    /// When the last successful full sync finished (S1).
    last_full_sync: Option<Duration>,
    /// The plan being carried out was full.
    planned_full: bool,
    /// The last plan's model had this node's Node.
    had_node: bool,
}

/// S1: a full sync at least this often (upstream logs it as `maxSyncPeriod`).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

impl SyncTracker {
    pub fn new(sync_period: Duration, compat: Compat) -> SyncTracker {
        SyncTracker {
            compat,
            last_full_sync: None,
            planned_full: false,
            had_node: false,
            need_full_sync: true,
            last_model: None,
            node_labels: None,
            sync_period,
            last_stale_scan: None,
            last_ok: false,
            last_applied: None,
        }
    }

    /// Forces the next sync to be full (canary gone, operator request).
    pub fn force_full(&mut self) {
        self.need_full_sync = true;
    }

    /// Plans a sync of `model` at time `now` (any monotonic clock).
    pub fn plan(&mut self, model: &ClusterModel, now: Duration) -> SyncPlan {
        let mut labels = model
            .node
            .as_ref()
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        if self.compat.node_change == NodeChangeRule::ZoneLabel {
            // S4: the node manager hands the proxier only the topology label.
            labels.retain(|k, _| k == ZONE_LABEL);
        } else if self.had_node && model.node.is_none() {
            // v1.30: a deletion forces a full sync even when there were no labels.
            self.need_full_sync = true;
        }
        self.had_node = model.node.is_some();
        if self.node_labels.as_ref() != Some(&labels) {
            // v1.30: any label change can change topology: upstream resyncs everything.
            if self.node_labels.is_some() || !labels.is_empty() {
                self.need_full_sync = true;
            }
            self.node_labels = Some(labels);
        }
        let changed = match &self.last_model {
            Some(prev) => model.changed_services(prev),
            None => model
                .services
                .keys()
                .chain(model.unmatched_endpoints.keys())
                .cloned()
                .collect(),
        };
        let large = model.total_endpoints() > LARGE_CLUSTER_ENDPOINTS;
        let periodic = match self.compat.periodic_full_sync {
            PeriodicFullSync::Never => false,
            PeriodicFullSync::Hourly => true,
            PeriodicFullSync::HourlyExceptLargeClusters => !large,
        };
        // `>=`: the runner's hourly run comes exactly an hour after the last one on an
        // exact clock; upstream's `>` on a real clock always sees it later than that.
        let hour_old = self
            .last_full_sync
            .is_some_and(|t| now.saturating_sub(t) >= FULL_SYNC_PERIOD);
        self.planned_full = self.need_full_sync || (periodic && hour_old);
        let scan_stale_chains = !large
            || self
                .last_stale_scan
                .is_none_or(|t| now.saturating_sub(t) > self.sync_period);
        SyncPlan {
            full: self.planned_full,
            changed,
            scan_stale_chains,
        }
    }

    /// A stale-chain scan's `iptables-save` returned at `at`: large-cluster mode waits a
    /// sync period from then (upstream's clock starts on success, after the save).
    pub fn stale_scan_done(&mut self, at: Duration) {
        self.last_stale_scan = Some(at);
    }

    /// The model of the last sync, successful or not.
    pub fn last_model(&self) -> Option<&ClusterModel> {
        self.last_model.as_ref()
    }

    /// Records the outcome at time `at`: the model counts as seen either way (upstream
    /// consumes the change sets at sync start), but only a success clears the need for a
    /// full sync (and, if it was full, restarts the hour of S1).
    pub fn finish(&mut self, model: ClusterModel, ok: bool, at: Duration) {
        if ok && self.planned_full {
            self.last_full_sync = Some(at);
        }
        if ok {
            self.last_applied = None;
        } else if self.last_ok {
            self.last_applied = self.last_model.take();
        }
        self.last_model = Some(model);
        self.last_ok = ok;
        self.need_full_sync = !ok;
    }

    /// The model of the last successful sync: what the kernel was last given.
    pub fn applied_model(&self) -> Option<&ClusterModel> {
        if self.last_ok {
            self.last_model.as_ref()
        } else {
            self.last_applied.as_ref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ip::IpFamily;
    use crate::model::ModelOptions;

    /// One Service with more endpoints than the large-cluster threshold.
    fn large_model() -> ClusterModel {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "big", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ports": [{"port": 80, "protocol": "TCP"}]}
        }))
        .unwrap();
        let eps: Vec<_> = (0..=LARGE_CLUSTER_ENDPOINTS)
            .map(|i| serde_json::json!({"addresses": [format!("10.1.{}.{}", i / 250, i % 250)]}))
            .collect();
        let slice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "big-1", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let opts = ModelOptions {
            family: IpFamily::V4,
            node_name: "n".into(),
            topology_aware_hints: false,
            load_balancer_ip_mode: false,
            node_hints: false,
            compat: crate::compat::Compat::v1_30(),
        };
        let m = ClusterModel::build([&svc], [&slice], [], &opts, &mut Vec::new());
        assert!(m.total_endpoints() > LARGE_CLUSTER_ENDPOINTS);
        m
    }

    #[test]
    fn large_clusters_rescan_a_sync_period_after_the_last_successful_scan() {
        let s = Duration::from_secs;
        let mut t = SyncTracker::new(s(30), crate::compat::Compat::v1_30());
        let m = large_model();
        assert!(t.plan(&m, s(0)).scan_stale_chains, "the first sync scans");
        // That scan failed (no stale_scan_done): the next sync scans again.
        assert!(t.plan(&m, s(5)).scan_stale_chains);
        // A scan that returned at 50 s (a slow iptables-save) starts the clock then.
        t.stale_scan_done(s(50));
        assert!(!t.plan(&m, s(60)).scan_stale_chains);
        assert!(!t.plan(&m, s(80)).scan_stale_chains);
        assert!(t.plan(&m, s(81)).scan_stale_chains);
    }

    fn small_model(labels: &[(&str, &str)]) -> ClusterModel {
        ClusterModel {
            node: Some(crate::model::node::NodeInfo {
                name: "n".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Plans and finishes (successfully) a sync at `at` seconds; returns whether full.
    fn sync(t: &mut SyncTracker, m: &ClusterModel, at: u64) -> bool {
        let full = t.plan(m, Duration::from_secs(at)).full;
        t.finish(m.clone(), true, Duration::from_secs(at));
        full
    }

    #[test]
    fn s1_hourly_full_resync_in_1_35_only() {
        let m = small_model(&[]);
        let mut old = SyncTracker::new(Duration::from_secs(30), Compat::v1_30());
        let mut new = SyncTracker::new(Duration::from_secs(30), Compat::v1_35());
        for t in [&mut old, &mut new] {
            assert!(sync(t, &m, 0), "first sync is full");
            assert!(!sync(t, &m, 1800));
            assert!(!sync(t, &m, 3599));
        }
        assert!(
            !sync(&mut old, &m, 3600),
            "v1.30: the hourly run is partial"
        );
        assert!(!sync(&mut old, &m, 7300));
        assert!(sync(&mut new, &m, 3600), "an hour after the last full sync");
        assert!(!sync(&mut new, &m, 3601));
        assert!(!sync(&mut new, &m, 7199));
        assert!(sync(&mut new, &m, 7200));
    }

    #[test]
    fn s1_a_failed_full_sync_does_not_restart_the_hour() {
        let m = small_model(&[]);
        let mut t = SyncTracker::new(Duration::from_secs(30), Compat::v1_35());
        assert!(sync(&mut t, &m, 0));
        assert!(t.plan(&m, Duration::from_secs(3700)).full);
        t.finish(m.clone(), false, Duration::from_secs(3700));
        // Still full (the failure), and then the hour counts from the success.
        assert!(sync(&mut t, &m, 3730));
        assert!(!sync(&mut t, &m, 7000));
        assert!(sync(&mut t, &m, 7330));
    }

    #[test]
    fn s3_no_hourly_full_resync_in_large_cluster_mode() {
        let m = large_model();
        let mut t = SyncTracker::new(Duration::from_secs(30), Compat::v1_35());
        assert!(sync(&mut t, &m, 0));
        assert!(!sync(&mut t, &m, 3600));
        assert!(!sync(&mut t, &m, 36000));
        // Back under the threshold, the hour (long past) applies again.
        assert!(sync(&mut t, &small_model(&[]), 36001));
    }

    #[test]
    fn s4_which_node_label_changes_force_a_full_sync() {
        let zone = |z: &str, other: &str| {
            small_model(&[("topology.kubernetes.io/zone", z), ("team", other)])
        };
        for (compat, other_label_forces) in [(Compat::v1_30(), true), (Compat::v1_35(), false)] {
            let mut t = SyncTracker::new(Duration::from_secs(30), compat);
            assert!(sync(&mut t, &zone("a", "x"), 0));
            assert!(!sync(&mut t, &zone("a", "x"), 1));
            assert_eq!(sync(&mut t, &zone("a", "y"), 2), other_label_forces);
            assert!(
                sync(&mut t, &zone("b", "y"), 3),
                "a zone change always does"
            );
            assert!(!sync(&mut t, &zone("b", "y"), 4));
        }
    }
}
