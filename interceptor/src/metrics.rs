//! Metrics in the Prometheus text format: every request by service, collaboration, serving site
//! and outcome, with a latency histogram; the kernel programs' and the proxy's counters are read
//! at scrape time. Recording is one lock-free-ish family lookup on the data path.
use std::{
    cell::RefCell,
    sync::atomic::{AtomicU64, Ordering},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::{Family, MetricConstructor},
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use serde::{Deserialize, Serialize};

use crate::{
    intercept::ebpf::Interception,
    peer::Peers,
    tls::{CertificateValidity, SiteTls},
};

/// The proxy's own counters, read at scrape time and by `/status`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProxyCounters {
    pub connections: AtomicU64,
    pub not_redirected: AtomicU64,
    pub http_requests: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub tcp_relays: AtomicU64,
}

/// How a request was served; the label `collaboration`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Collaboration {
    /// At this site, by its own instance.
    Local,
    /// At the one other site the scope names.
    Sharing,
    /// Along an otherwise chain (`;`, `around`).
    Otherwise,
    /// At every site of an `&` expression, or through a replicated resource's leader.
    Replication,
    /// Over the sites of a `%` expression.
    Cross,
    /// Not served: the scope could not be used, or asks what is not available yet.
    Refused,
}

impl Collaboration {
    pub fn as_str(self) -> &'static str {
        match self {
            Collaboration::Local => "local",
            Collaboration::Sharing => "sharing",
            Collaboration::Otherwise => "otherwise",
            Collaboration::Replication => "replication",
            Collaboration::Cross => "cross",
            Collaboration::Refused => "refused",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub role: String,
    pub subject: String,
}

/// Whose policy refused a request, and by which rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub rule: &'static str,
    pub who: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: String,
    pub collaboration: &'static str,
    pub site: String,
    /// `2xx` .. `5xx` for an answer, as given to the client.
    pub outcome: &'static str,
}

/// The label `outcome` of an answer's status.
fn outcome_of(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl RequestLabels {
    pub fn new(service: &str, collaboration: Collaboration, site: &str, status: u16) -> Self {
        RequestLabels {
            service: service.to_owned(),
            collaboration: collaboration.as_str(),
            site: site.to_owned(),
            outcome: outcome_of(status),
        }
    }
}

/// How many label sets are kept the histograms of, per service and thread: a service's
/// requests come in a few (collaborations, outcomes, serving sites); past that they are looked
/// up each time.
const KEPT_PER_SERVICE: usize = 16;

/// The request histograms one service's connections on one thread counted their requests in,
/// kept so that their next requests find theirs without a family lookup (labels made, hashed,
/// locked).
#[derive(Default)]
pub struct RequestHistograms {
    kept: Mutex<Vec<KeptHistogram>>,
    /// The same for the gRPC calls of an HTTP/2 connection: a few methods, a few statuses.
    kept_grpc: Mutex<Vec<(GrpcLabels, Histogram)>>,
}

impl RequestHistograms {
    /// Those of `service` on this thread, shared by its connections there: one connection's own
    /// would be held through all the time it is idle, and a data-plane thread serves its
    /// connections one poll at a time, so they are never locked by two at once.
    pub fn of_this_thread(service: &str) -> Arc<RequestHistograms> {
        thread_local! {
            static KEPT: RefCell<Vec<(String, Arc<RequestHistograms>)>> =
                const { RefCell::new(Vec::new()) };
        }
        KEPT.with_borrow_mut(|kept| {
            if let Some((_, histograms)) = kept.iter().find(|(name, _)| name == service) {
                return histograms.clone();
            }
            let histograms = Arc::<RequestHistograms>::default();
            kept.push((service.to_owned(), histograms.clone()));
            histograms
        })
    }
}

struct KeptHistogram {
    collaboration: Collaboration,
    outcome: &'static str,
    site: String,
    histogram: Histogram,
}

/// A gRPC call's labels: its request's, with the method called and the status it ended with
/// (`0`.. `16`, `none` when it ended without one, `cancelled` when the client went away).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub service: String,
    pub method: String,
    pub collaboration: &'static str,
    pub site: String,
    pub grpc_status: String,
}

#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 50 µs to about 26 s: a local hop to a slow cross-site fan-out.
        Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram, LatencyBuckets>,
    grpc_calls: Family<GrpcLabels, Histogram, LatencyBuckets>,
    policy_refusals: Family<PolicyLabels, Counter>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    config_generation: Gauge,
    refused_reloads: Counter,
}

impl Metrics {
    /// `interception` is `None` where no kernel programs run (the proxy's own tests).
    pub fn new(
        interception: Option<Arc<Interception>>,
        proxy_counters: Arc<ProxyCounters>,
        peers: Option<Arc<Peers>>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("cheops");
        let requests = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "request_duration_seconds",
            "Requests handled by the proxy, by service, collaboration, serving site and outcome, with their latency",
            requests.clone(),
        );
        let grpc_calls = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "grpc_call_duration_seconds",
            "gRPC calls handled by the proxy, by service, method, collaboration, serving site and gRPC status, with their duration to the end of the call",
            grpc_calls.clone(),
        );
        let policy_refusals = Family::default();
        registry.register(
            "policy_refusals",
            "Requests refused by a scope or peer policy, by rule and by whose policy it is",
            policy_refusals.clone(),
        );
        let certificate_expiry = Family::default();
        registry.register(
            "certificate_expiry_seconds",
            "When each certificate this site uses expires, in seconds since the Unix epoch, by role (ca, site) and subject",
            certificate_expiry.clone(),
        );
        let config_generation = Gauge::default();
        config_generation.set(1);
        registry.register(
            "config_generation",
            "The running configuration's generation: 1 at start, one more per reload applied",
            config_generation.clone(),
        );
        let refused_reloads = Counter::default();
        registry.register(
            "config_reloads_refused",
            "Reloads of the configuration refused (an invalid file, or a change that needs a restart)",
            refused_reloads.clone(),
        );
        registry.register_collector(Box::new(Counters {
            interception,
            proxy_counters,
            peers,
        }));
        Metrics {
            registry,
            requests,
            grpc_calls,
            policy_refusals,
            certificate_expiry,
            config_generation,
            refused_reloads,
        }
    }

    /// A reload applied: the configuration's generation now.
    pub fn set_config_generation(&self, generation: u64) {
        self.config_generation.set(generation as i64);
    }

    pub fn record_refused_reload(&self) {
        self.refused_reloads.inc();
    }

    /// The certificates this site uses: each one's expiry, as a Unix time.
    fn set_certificates(&self, certificates: &[CertificateValidity]) {
        for certificate in certificates {
            self.certificate_expiry
                .get_or_create(&CertificateLabels {
                    role: certificate.role.clone(),
                    subject: certificate.subject.clone(),
                })
                .set(certificate.not_after_unix);
        }
    }

    /// Sets the certificates of `tls` now, and again at each reload.
    pub fn follow_certificates(self: &Arc<Self>, tls: &Arc<SiteTls>) {
        self.set_certificates(&tls.certificates());
        let (metrics, tls) = (self.clone(), tls.clone());
        let mut changes = tls.changes();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                metrics.set_certificates(&tls.certificates());
            }
        });
    }

    /// A request refused by a policy: `rule` (`allow_sites`, `allow`, `allow_services`) of
    /// `who` (a workload, inbound requests, a peer).
    pub fn record_policy_refusal(&self, rule: &'static str, who: &str) {
        self.policy_refusals
            .get_or_create(&PolicyLabels {
                rule,
                who: who.to_owned(),
            })
            .inc();
    }

    /// A request of `service` answered `status` by `site` after `elapsed`, counted in the
    /// histogram `kept` has for its labels, or in the family's (then kept).
    pub fn record_request(
        &self,
        kept: &RequestHistograms,
        service: &str,
        collaboration: Collaboration,
        site: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let outcome = outcome_of(status);
        let mut kept = kept.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let found = kept
            .iter()
            .find(|k| k.collaboration == collaboration && k.outcome == outcome && k.site == site);
        if let Some(found) = found {
            return found.histogram.observe(elapsed.as_secs_f64());
        }
        let labels = RequestLabels::new(service, collaboration, site, status);
        let histogram = self.requests.get_or_create(&labels).clone();
        histogram.observe(elapsed.as_secs_f64());
        if kept.len() < KEPT_PER_SERVICE {
            kept.push(KeptHistogram {
                collaboration,
                outcome,
                site: labels.site,
                histogram,
            });
        }
    }

    /// A gRPC call to `service`'s `method` that ended with `grpc_status` after `elapsed`,
    /// counted in the histogram `kept` holds for its labels, if it holds one.
    #[allow(clippy::too_many_arguments)]
    pub fn record_grpc_call(
        &self,
        kept: &RequestHistograms,
        service: &str,
        collaboration: Collaboration,
        site: &str,
        method: &str,
        grpc_status: &str,
        elapsed: Duration,
    ) {
        let mut kept = kept
            .kept_grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let found = kept.iter().find(|(labels, _)| {
            labels.collaboration == collaboration.as_str()
                && labels.grpc_status == grpc_status
                && labels.method == method
                && labels.site == site
                && labels.service == service
        });
        if let Some((_, histogram)) = found {
            return histogram.observe(elapsed.as_secs_f64());
        }
        let labels = GrpcLabels {
            service: service.to_owned(),
            method: method.to_owned(),
            collaboration: collaboration.as_str(),
            site: site.to_owned(),
            grpc_status: grpc_status.to_owned(),
        };
        let histogram = self.grpc_calls.get_or_create(&labels).clone();
        histogram.observe(elapsed.as_secs_f64());
        if kept.len() < KEPT_PER_SERVICE {
            kept.push((labels, histogram));
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The kernel's and the proxy's counters, read when scraped.
struct Counters {
    interception: Option<Arc<Interception>>,
    proxy_counters: Arc<ProxyCounters>,
    peers: Option<Arc<Peers>>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kernel and proxy counters")
    }
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kernel = self
            .interception
            .as_ref()
            .map(|interception| interception.counters())
            .unwrap_or_default();
        let proxy = &self.proxy_counters;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "kernel_redirected",
                "Connections to meshed services redirected to the proxy by the kernel programs",
                kernel.redirected,
            ),
            (
                "kernel_passed_through",
                "Connections from workloads to other addresses, left untouched",
                kernel.passed_through,
            ),
            (
                "kernel_failed_open",
                "Connections to meshed services left untouched because no proxy listened",
                kernel.failed_open,
            ),
            (
                "kernel_steered_inbound",
                "Connections from other machines to inbound services handed to cheops",
                kernel.steered_inbound,
            ),
            (
                "proxy_connections",
                "Connections accepted by the proxy",
                load(&proxy.connections),
            ),
            (
                "proxy_not_redirected",
                "Connections to the proxy that the kernel programs did not redirect, closed",
                load(&proxy.not_redirected),
            ),
            (
                "proxy_upstream_errors",
                "Requests whose destination failed or timed out",
                load(&proxy.upstream_errors),
            ),
            (
                "proxy_tcp_relays",
                "Non-HTTP connections relayed as plain TCP",
                load(&proxy.tcp_relays),
            ),
        ] {
            encode_counter(&mut encoder, name, help, value)?;
        }
        if let Some(peers) = &self.peers {
            encode_peers(peers, &mut encoder)?;
        }
        Ok(())
    }
}

/// One counter with no labels, read at scrape time.
fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// Peer traffic counters, and each peer's state and measured round trip.
fn encode_peers(peers: &Peers, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let counters = &peers.counters;
    for (name, help, counter) in [
        (
            "peer_forwarded",
            "Requests forwarded to another site",
            &counters.forwarded,
        ),
        (
            "peer_served_for_peers",
            "Requests executed here for another site",
            &counters.served_for_peers,
        ),
        (
            "peer_refused_connections",
            "Peer connections refused (no certificate of a configured site)",
            &counters.refused_connections,
        ),
    ] {
        encode_counter(encoder, name, help, counter.load(Ordering::Relaxed))?;
    }
    peers.out_of_validity.encode(encoder.encode_descriptor(
        "peer_certificates_out_of_validity",
        "Peer certificates refused for being expired or not valid yet, by peer and direction (inbound: presented by a peer connecting here; outbound: by a peer's API)",
        None,
        MetricType::Counter,
    )?)?;
    let status = peers.status();
    let mut up = encoder.encode_descriptor(
        "peer_up",
        "Whether the last heartbeat to the peer was answered",
        None,
        MetricType::Gauge,
    )?;
    for peer in &status {
        ConstGauge::new(i64::from(peer.up))
            .encode(up.encode_family(&[("peer", peer.name.as_str())])?)?;
    }
    let mut round_trip = encoder.encode_descriptor(
        "peer_round_trip_seconds",
        "The last round trip measured to the peer by heartbeats",
        None,
        MetricType::Gauge,
    )?;
    for peer in status.iter().filter(|p| p.up) {
        let seconds = peer.round_trip_us.unwrap_or_default() as f64 / 1e6;
        ConstGauge::new(seconds)
            .encode(round_trip.encode_family(&[("peer", peer.name.as_str())])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count line of the request histogram with these labels, in the rendered metrics.
    fn count_of(metrics: &Metrics, labels: &str) -> Option<String> {
        let prefix = format!("cheops_request_duration_seconds_count{{{labels}}} ");
        let text = metrics.render();
        let line = text.lines().find(|line| line.starts_with(&prefix))?;
        Some(line[prefix.len()..].to_owned())
    }

    #[test]
    fn requests_counted_through_kept_histograms_land_in_their_labels_series() {
        let metrics = Metrics::new(None, Arc::default(), None);
        let (first, second) = (RequestHistograms::default(), RequestHistograms::default());
        let elapsed = Duration::from_millis(1);
        for kept in [&first, &first, &second] {
            metrics.record_request(kept, "catalog", Collaboration::Local, "Paris", 200, elapsed);
        }
        metrics.record_request(
            &first,
            "catalog",
            Collaboration::Local,
            "Paris",
            503,
            elapsed,
        );
        metrics.record_request(
            &first,
            "catalog",
            Collaboration::Sharing,
            "Rome",
            201,
            elapsed,
        );
        let local = r#"service="catalog",collaboration="local",site="Paris""#;
        assert_eq!(
            count_of(&metrics, &format!(r#"{local},outcome="2xx""#)).as_deref(),
            Some("3")
        );
        assert_eq!(
            count_of(&metrics, &format!(r#"{local},outcome="5xx""#)).as_deref(),
            Some("1")
        );
        let shared = r#"service="catalog",collaboration="sharing",site="Rome",outcome="2xx""#;
        assert_eq!(count_of(&metrics, shared).as_deref(), Some("1"));
    }

    #[test]
    fn grpc_calls_counted_through_kept_histograms_land_in_their_labels_series() {
        let metrics = Metrics::new(None, Arc::default(), None);
        let kept = RequestHistograms::default();
        let elapsed = Duration::from_millis(1);
        let call = |method, status| {
            metrics.record_grpc_call(
                &kept,
                "kv",
                Collaboration::Local,
                "Paris",
                method,
                status,
                elapsed,
            );
        };
        call("/kv.KV/Get", "0");
        call("/kv.KV/Get", "0");
        call("/kv.KV/Get", "14");
        call("/kv.KV/Put", "0");
        let series = |method: &str, status: &str| {
            let labels = format!(
                r#"service="kv",method="{method}",collaboration="local",site="Paris",grpc_status="{status}""#
            );
            let line = format!("cheops_grpc_call_duration_seconds_count{{{labels}}} ");
            let text = metrics.render();
            let found = text.lines().find_map(|l| l.strip_prefix(line.as_str()));
            found.map(str::to_owned)
        };
        assert_eq!(series("/kv.KV/Get", "0").as_deref(), Some("2"));
        assert_eq!(series("/kv.KV/Get", "14").as_deref(), Some("1"));
        assert_eq!(series("/kv.KV/Put", "0").as_deref(), Some("1"));
    }
}
