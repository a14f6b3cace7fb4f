//! Cluster DNS metrics. Counters for every rcode and transport are resolved once at start, so
//! answering a query touches only atomics (no family lookup).

use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub transport: String,
    pub rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

const RCODES: [ResponseCode; 7] = [
    ResponseCode::NoError,
    ResponseCode::FormErr,
    ResponseCode::ServFail,
    ResponseCode::NXDomain,
    ResponseCode::NotImp,
    ResponseCode::Refused,
    ResponseCode::BADVERS,
];

fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

pub struct DnsMetrics {
    queries: Family<QueryLabels, Counter>,
    /// [udp, tcp] × RCODES.
    answered: [[Counter; 7]; 2],
    malformed_family: Family<KindLabels, Counter>,
    /// Answered FORMERR, dropped.
    pub malformed: [Counter; 2],
    pub truncated: Counter,
    forwarded_family: Family<KindLabels, Counter>,
    /// Answered by an upstream, no upstream answered.
    pub forwarded: [Counter; 2],
    pub zone_names: Gauge,
    pub zone_build_seconds: Histogram,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsMetrics {
    pub fn new() -> Self {
        let queries = Family::<QueryLabels, Counter>::default();
        let answered = ["udp", "tcp"].map(|t| {
            RCODES.map(|r| {
                queries
                    .get_or_create(&QueryLabels {
                        transport: t.into(),
                        rcode: rcode_label(r).into(),
                    })
                    .clone()
            })
        });
        let kinds = |f: &Family<KindLabels, Counter>, k: [&str; 2]| {
            k.map(|k| f.get_or_create(&KindLabels { kind: k.into() }).clone())
        };
        let malformed_family = Family::default();
        let forwarded_family = Family::default();
        DnsMetrics {
            malformed: kinds(&malformed_family, ["formerr", "dropped"]),
            forwarded: kinds(&forwarded_family, ["answered", "failed"]),
            queries,
            answered,
            malformed_family,
            forwarded_family,
            truncated: Counter::default(),
            zone_names: Gauge::default(),
            zone_build_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        }
    }

    /// Counts one answered query.
    pub fn answered(&self, tcp: bool, rcode: ResponseCode) {
        let i = RCODES.iter().position(|r| *r == rcode).unwrap_or(2);
        self.answered[usize::from(tcp)][i].inc();
    }

    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("dns");
        r.register(
            "queries",
            "Queries answered, by transport and rcode",
            self.queries.clone(),
        );
        r.register(
            "malformed",
            "Packets that could not be parsed: answered FORMERR, or dropped",
            self.malformed_family.clone(),
        );
        r.register(
            "truncated",
            "UDP replies truncated (TC) because they did not fit the client's size",
            self.truncated.clone(),
        );
        r.register(
            "forwarded",
            "Queries for names outside the cluster domain sent upstream, by result",
            self.forwarded_family.clone(),
        );
        r.register(
            "zone_names",
            "Names in the cluster zone",
            self.zone_names.clone(),
        );
        r.register(
            "zone_build_seconds",
            "Time to rebuild the cluster zone from a snapshot",
            self.zone_build_seconds.clone(),
        );
    }
}
