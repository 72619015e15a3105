//! What Silo counts, for the sidecar's Prometheus endpoint (`/metrics`) and
//! for embedders who export it themselves.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of a sidecar request.
pub struct RequestLabels {
    /// GET, HEAD, PUT, POST, DELETE or `other`.
    pub method: &'static str,
    /// The route's pattern (`/v1/files/{volume}/{*path}`), never the
    /// requested path, so that the label set stays small.
    pub route: String,
    /// The answer's status.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of an S3 request.
pub struct S3Labels {
    /// The S3 operation (`PutObject`, …), or `unauthenticated` for a
    /// request refused before it was read as one.
    pub operation: String,
    /// The answer's status.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of an S3 request's duration.
pub struct S3OperationLabels {
    /// The S3 operation.
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of a sidecar request's duration.
pub struct RouteLabels {
    /// The method.
    pub method: &'static str,
    /// The route's pattern.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of a cache lookup.
pub struct LookupLabels {
    /// The volume.
    pub volume: String,
    /// `hit` or `miss`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of a per-volume gauge.
pub struct VolumeLabels {
    /// The volume.
    pub volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
/// Labels of a plugin invocation.
pub struct PluginLabels {
    /// The plugin.
    pub plugin: String,
    /// `on-upload` or `on-derive`.
    pub call: &'static str,
    /// `accept`, `reject`, `ok`, or the error code (`time-limit`, `trap`, …).
    pub outcome: String,
}

/// Silo's counters. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// `silo_http_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `silo_http_request_duration_seconds`.
    pub request_seconds: Family<RouteLabels, Histogram>,
    /// Metadata lookups served by the front cache, or not.
    pub metadata_lookups: Family<LookupLabels, Counter>,
    /// Reads served by the read cache, or not.
    pub read_cache_lookups: Family<LookupLabels, Counter>,
    /// Reads served by the memory cache, or not.
    pub memory_cache_lookups: Family<LookupLabels, Counter>,
    /// Bytes in each volume's read cache.
    pub read_cache_bytes: Family<VolumeLabels, Gauge>,
    /// Plugin invocations, by outcome.
    pub plugin_invocations: Family<PluginLabels, Counter>,
    /// S3 requests, by operation and status.
    pub s3_requests: Family<S3Labels, Counter>,
    /// S3 requests' durations.
    pub s3_request_seconds: Family<S3OperationLabels, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 20,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("silo");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response's headers",
            request_seconds.clone(),
        );
        let metadata_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "metadata_cache_lookups",
            "File lookups answered by the metadata cache (hit) or the backend (miss)",
            metadata_lookups.clone(),
        );
        let read_cache_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "read_cache_lookups",
            "Whole-file reads of S3 volumes served from the local disk cache (hit) or S3 (miss)",
            read_cache_lookups.clone(),
        );
        let memory_cache_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "memory_cache_lookups",
            "Reads of small files served from this node's memory (hit) or storage (miss)",
            memory_cache_lookups.clone(),
        );
        let read_cache_bytes = Family::<VolumeLabels, Gauge>::default();
        registry.register(
            "read_cache_bytes",
            "Bytes held by the local disk read cache",
            read_cache_bytes.clone(),
        );
        let plugin_invocations = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_invocations",
            "Plugin invocations by outcome",
            plugin_invocations.clone(),
        );
        let s3_requests = Family::<S3Labels, Counter>::default();
        registry.register(
            "s3_requests",
            "Requests the S3 endpoint answered, by operation and status",
            s3_requests.clone(),
        );
        let s3_request_seconds =
            Family::<S3OperationLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "s3_request_duration_seconds",
            "Time to the S3 endpoint's response headers, by operation",
            s3_request_seconds.clone(),
        );
        Metrics {
            registry,
            s3_requests,
            s3_request_seconds,
            requests,
            request_seconds,
            metadata_lookups,
            read_cache_lookups,
            memory_cache_lookups,
            read_cache_bytes,
            plugin_invocations,
        }
    }
}

impl Metrics {
    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count a sidecar request and its duration.
    pub fn request(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count an S3 request and its duration.
    pub fn s3_request(&self, operation: &str, status: u16, elapsed: Duration) {
        self.s3_requests
            .get_or_create(&S3Labels {
                operation: operation.to_owned(),
                status,
            })
            .inc();
        self.s3_request_seconds
            .get_or_create(&S3OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a plugin invocation.
    pub fn plugin(&self, plugin: &str, call: &'static str, outcome: &str) {
        self.plugin_invocations
            .get_or_create(&PluginLabels {
                plugin: plugin.to_owned(),
                call,
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One volume's lookup counters, resolved once so that the hot path
    /// neither allocates labels nor searches the families.
    pub(crate) fn lookups_of(&self, volume: &str) -> VolumeLookups {
        let pair = |family: &Family<LookupLabels, Counter>| {
            [false, true].map(|hit| family.get_or_create(&lookup(volume, hit)).clone())
        };
        VolumeLookups {
            metadata: pair(&self.metadata_lookups),
            read_cache: pair(&self.read_cache_lookups),
            memory_cache: pair(&self.memory_cache_lookups),
        }
    }
}

/// A volume's lookup counters: `[miss, hit]`.
#[derive(Clone)]
pub(crate) struct VolumeLookups {
    pub metadata: [Counter; 2],
    pub read_cache: [Counter; 2],
    pub memory_cache: [Counter; 2],
}

fn lookup(volume: &str, hit: bool) -> LookupLabels {
    LookupLabels {
        volume: volume.to_owned(),
        result: if hit { "hit" } else { "miss" },
    }
}
