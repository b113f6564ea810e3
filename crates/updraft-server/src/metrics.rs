//! Prometheus metrics, served at `/metrics` in the text format.

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutState {
    pub rollout: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateResult {
    pub gate: String,
    pub verdict: String,
}

pub struct Metrics {
    pub check_ins: Counter,
    pub assignments: Family<Kind, Counter>,
    pub downloads: Counter,
    pub download_bytes: Counter<u64, AtomicU64>,
    pub events: Family<Kind, Counter>,
    pub rejected: Family<Kind, Counter>,
    pub rollout_state: Family<RolloutState, Gauge>,
    pub gate_results: Family<GateResult, Counter>,
    pub latency: Family<Route, Histogram>,
    pub connections_evicted: Counter,
    pub connections_refused: Counter,
    pub rate_limited: Family<Kind, Counter>,
    registry: Mutex<Registry>,
}

impl Metrics {
    pub fn rejected(&self, code: &str) {
        self.rejected.get_or_create(&Kind { kind: code.to_owned() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry");
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("metrics encode");
        out
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let latency =
        Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14)));
    let m = Metrics {
        check_ins: Counter::default(),
        assignments: Family::default(),
        downloads: Counter::default(),
        connections_evicted: Counter::default(),
        connections_refused: Counter::default(),
        rate_limited: Family::default(),
        download_bytes: Counter::default(),
        events: Family::default(),
        rejected: Family::default(),
        rollout_state: Family::default(),
        gate_results: Family::default(),
        latency,
        registry: Mutex::new(Registry::with_prefix("updraft")),
    };
    {
        let mut r = m.registry.lock().expect("metrics registry");
        r.register("check_ins", "Device check-ins", m.check_ins.clone());
        r.register("assignments", "Install assignments given, by reason", m.assignments.clone());
        r.register("downloads", "Artifact downloads started", m.downloads.clone());
        r.register("download_bytes", "Artifact bytes served", m.download_bytes.clone());
        r.register("events", "Install events reported, by kind", m.events.clone());
        r.register("rejected_requests", "Requests refused, by error code", m.rejected.clone());
        r.register("rollout_state", "1 for each rollout's current state", m.rollout_state.clone());
        r.register("gate_results", "Gate verdict changes, by gate and verdict", m.gate_results.clone());
        r.register("request_seconds", "Request latency, by route", m.latency.clone());
        r.register(
            "connections_evicted",
            "Connections closed at the cap before they sent a request head",
            m.connections_evicted.clone(),
        );
        r.register("connections_refused", "Connections answered 503 at the cap", m.connections_refused.clone());
        r.register("rate_limited", "Requests answered 429, by caller kind", m.rate_limited.clone());
    }
    m
});
