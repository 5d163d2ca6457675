//! Metrics (OPERATIONS.md §7): OpenTelemetry instruments under the reference's meter name and metric
//! names, exported in the Prometheus text format by `GET /metrics` on the metrics listener; plus ours: HTTP
//! request durations by route and status, bytes written and read, PKARR publishing and republishing.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider, UpDownCounter};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use homestead_backends::Store;
use homestead_middleware::Hook;

/// The reference's meter name, so that dashboards built for it keep working.
const METER: &str = "pubky_homeserver";

/// Every instrument the server records.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    /// Successful sign-ups.
    pub signups: Counter<u64>,
    /// Open `/events-stream` responses.
    pub event_streams: UpDownCounter<i64>,
    /// Live streams closed for falling behind.
    pub stream_lagged: Counter<u64>,
    /// Live streams found with their queue at least half full.
    pub stream_half_full: Counter<u64>,
    /// How long event streams stayed open, in ms.
    pub stream_duration_ms: Histogram<u64>,
    /// `/events/` query time, in ms.
    pub events_query_ms: Histogram<u64>,
    /// `/events-stream` history batch query time, in ms.
    pub stream_query_ms: Histogram<u64>,
    /// HTTP requests by route, method and status, in seconds.
    pub http_requests: Histogram<f64>,
    /// File bytes committed by PUTs.
    pub bytes_written: Counter<u64>,
    /// File bytes served by GETs.
    pub bytes_read: Counter<u64>,
    /// Publishes of the server's PKARR record, by result.
    pub pkarr_publishes: Counter<u64>,
    /// User records handled by the republisher, by outcome.
    pub user_republishes: Counter<u64>,
    /// Storage requests by addressing and authentication (PROTOCOL-0.17.md §20).
    storage_requests: Counter<u64>,
    /// Client requests answered per recent interval, for the console's request-rate chart.
    pub request_rate: crate::console::RequestRate,
}

/// What a storage request with a resolved owner says about the client that sent it (PROTOCOL-0.17.md
/// §20): operators read from it when the legacy addressing and cookies can be retired.
#[derive(Debug, Clone, Copy)]
pub struct StorageRequest<'a> {
    /// `/storage/<owner>/...` rather than the owner-relative route.
    pub path_addressed: bool,
    /// The request's headers (`pubky-host`).
    pub headers: &'a http::HeaderMap,
    /// The request's query string.
    pub query: Option<&'a str>,
    /// The owner the request resolved to.
    pub owner: &'a pkarr::PublicKey,
    /// Who the request proved to be.
    pub authentication: &'a homestead_middleware::Authentication,
}

impl StorageRequest<'_> {
    /// The label values, without key, path or secret.
    fn labels(&self) -> [KeyValue; 4] {
        use homestead_middleware::tenant::parse_key;
        use homestead_middleware::{Authentication, Credential};
        let mode = if self.path_addressed {
            "path"
        } else {
            "legacy"
        };
        let header = match self.headers.get("pubky-host") {
            None => "absent",
            Some(value) => match value.to_str().ok().and_then(parse_key) {
                Some(key) if key == *self.owner => "matching",
                _ => "other",
            },
        };
        let query = homestead_middleware::query::Query::parse(self.query)
            .all("pubky-host")
            .next()
            .is_some();
        let auth = match self.authentication {
            Authentication::Authenticated(principal) => match principal.via {
                Credential::Cookie { .. } => "cookie",
                Credential::Bearer { .. } => "grant",
            },
            _ => "none",
        };
        [
            KeyValue::new("addressing_mode", mode),
            KeyValue::new("pubky_host_header", header),
            KeyValue::new("pubky_host_query", if query { "true" } else { "false" }),
            KeyValue::new("auth_method", auth),
        ]
    }
}

impl Metrics {
    /// Creates the instruments and their Prometheus registry; `otlp` also exports them to a collector.
    pub fn new(otlp: Option<PeriodicReader<MetricExporter>>) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        let mut provider = SdkMeterProvider::builder().with_reader(exporter);
        if let Some(reader) = otlp {
            provider = provider.with_reader(reader);
        }
        let provider = provider.build();
        let meter = provider.meter(METER);
        let ms_buckets = vec![
            0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
            7500.0, 10000.0,
        ];
        Ok(Self {
            signups: meter
                .u64_counter("signup_count")
                .with_description("Total number of successful signups")
                .build(),
            event_streams: meter
                .i64_up_down_counter("event_stream_active_connections")
                .with_description("Number of active event stream connections")
                .build(),
            stream_lagged: meter
                .u64_counter("event_stream_broadcast_lagged_count")
                .with_description("Number of times event stream broadcast channel lagged")
                .build(),
            stream_half_full: meter
                .u64_counter("event_stream_broadcast_half_full_count")
                .with_description(
                    "Number of times event stream broadcast channel reached half capacity",
                )
                .build(),
            stream_duration_ms: meter
                .u64_histogram("event_stream_connection_duration_ms")
                .with_description("Duration of event stream connections in milliseconds")
                .with_boundaries(vec![10.0, 100.0, 1000.0, 10000.0, 100000.0])
                .build(),
            events_query_ms: meter
                .u64_histogram("events_db_query_duration_ms")
                .with_description("Duration of /events database queries in milliseconds")
                .with_boundaries(ms_buckets.clone())
                .build(),
            stream_query_ms: meter
                .u64_histogram("event_stream_db_query_duration_ms")
                .with_description("Duration of /events-stream database queries in milliseconds")
                .with_boundaries(ms_buckets)
                .build(),
            http_requests: meter
                .f64_histogram("http_request_duration_seconds")
                .with_description("Duration of HTTP requests by route, method and status")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            bytes_written: meter
                .u64_counter("storage_bytes_written")
                .with_description("File bytes committed by PUT requests")
                .build(),
            bytes_read: meter
                .u64_counter("storage_bytes_read")
                .with_description("File bytes served by GET requests")
                .build(),
            pkarr_publishes: meter
                .u64_counter("pkarr_server_record_publishes")
                .with_description("Publishes of the server's PKARR record, by result")
                .build(),
            user_republishes: meter
                .u64_counter("pkarr_user_record_republishes")
                .with_description("User PKARR records handled by the republisher, by outcome")
                .build(),
            storage_requests: meter
                .u64_counter("storage_request_count")
                .with_description("Number of client storage requests by migration mode")
                .build(),
            request_rate: crate::console::RequestRate::default(),
            registry,
            provider,
        })
    }

    /// Counts one storage request.
    pub fn count_storage_request(&self, request: StorageRequest<'_>) {
        self.storage_requests.add(1, &request.labels());
    }

    /// Adds the gauges read from the storage at each collection: connections of the database pools,
    /// whether the database and blob store answer, and storage failures so far.
    pub fn observe_storage(&self, store: Store) {
        let meter = self.provider.meter(METER);
        let pools = store.clone();
        meter
            .u64_observable_gauge("db_pool_connections")
            .with_description("Database pool connections by pool and state")
            .with_callback(move |gauge| {
                for (pool, open, idle) in pools.operations().pool_stats() {
                    let busy = open.saturating_sub(idle);
                    gauge.observe(
                        u64::from(busy),
                        &[
                            KeyValue::new("pool", pool),
                            KeyValue::new("state", "in_use"),
                        ],
                    );
                    gauge.observe(
                        u64::from(idle),
                        &[KeyValue::new("pool", pool), KeyValue::new("state", "idle")],
                    );
                }
            })
            .build();
        let health = store.clone();
        meter
            .u64_observable_gauge("storage_dependency_up")
            .with_description(
                "Whether the database and the blob store answered the last probe (1) or not (0)",
            )
            .with_callback(move |gauge| {
                let health = health.health();
                gauge.observe(
                    u64::from(health.database_up()),
                    &[KeyValue::new("dependency", "database")],
                );
                gauge.observe(
                    u64::from(health.blobs_up()),
                    &[KeyValue::new("dependency", "blobs")],
                );
            })
            .build();
        meter
            .u64_observable_counter("storage_errors")
            .with_description("Storage failures while answering requests, by backend")
            .with_callback(|counter| {
                let failures = &crate::http_error::STORAGE_FAILURES;
                counter.observe(
                    failures.blob.load(Ordering::Relaxed),
                    &[KeyValue::new("backend", "blob")],
                );
                counter.observe(
                    failures.database.load(Ordering::Relaxed),
                    &[KeyValue::new("backend", "database")],
                );
            })
            .build();
    }

    /// Everything recorded so far, in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The metrics listener's router: `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(err) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("# Failed to render metrics: {err}\n"),
        )
            .into_response(),
    }
}

/// The route template of a client request path, as the duration histogram labels it.
pub fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/signup" => "/signup",
        "/session" => "/session",
        "/info" => "/info",
        "/events/" => "/events/",
        "/events-stream" => "/events-stream",
        _ if path.starts_with("/signup_tokens/") => "/signup_tokens/{token}",
        _ if path.starts_with("/storage/") => "/storage/{user}/{path}",
        _ if path.starts_with("/pub/") && path.ends_with('/') => "/pub/{dir}/",
        _ if path.starts_with("/pub/") => "/pub/{path}",
        _ => "other",
    }
}

/// The method as a label: one of the methods the API knows, or `other`, so that made-up methods cannot
/// grow the metrics.
pub fn method_label(method: &http::Method) -> &'static str {
    static KNOWN: [http::Method; 9] = [
        http::Method::GET,
        http::Method::HEAD,
        http::Method::PUT,
        http::Method::POST,
        http::Method::DELETE,
        http::Method::OPTIONS,
        http::Method::PATCH,
        http::Method::CONNECT,
        http::Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", http::Method::as_str)
}

/// Records each request's duration with its route template (`website` for a website page), method and
/// status: the request-metrics [`Hook`].
#[derive(Debug, Clone)]
pub struct RecordRequests(pub Arc<Metrics>);

impl Hook for RecordRequests {
    type Seen = (&'static str, &'static str, std::time::Instant);

    fn request<B>(&self, request: &http::Request<B>) -> Self::Seen {
        let route = match request.extensions().get::<crate::routes::website::Site>() {
            Some(_) => "website",
            None => route_of(request.uri().path()),
        };
        (
            route,
            method_label(request.method()),
            std::time::Instant::now(),
        )
    }

    fn response<B>(&self, (route, method, started): Self::Seen, response: &mut http::Response<B>) {
        self.0.request_rate.record();
        self.0.http_requests.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("route", route),
                KeyValue::new("method", method),
                KeyValue::new("status", i64::from(response.status().as_u16())),
            ],
        );
    }
}

/// Milliseconds of a duration, for the millisecond histograms.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_appear_with_the_reference_scope() {
        let metrics = Metrics::new(None).unwrap();
        metrics.signups.add(2, &[]);
        metrics.stream_duration_ms.record(50, &[]);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("signup_count_total{otel_scope_name=\"pubky_homeserver\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "event_stream_connection_duration_ms_bucket{otel_scope_name=\"pubky_homeserver\",le=\"100\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_grafana_dashboard_queries_metrics_that_exist() {
        let metrics = Metrics::new(None).unwrap();
        let app = crate::routes::tests::TestApp::builder().build().await;
        metrics.observe_storage(app.store());
        metrics.signups.add(1, &[]);
        metrics.event_streams.add(1, &[]);
        metrics.stream_lagged.add(1, &[]);
        metrics.stream_half_full.add(1, &[]);
        metrics.stream_duration_ms.record(1, &[]);
        metrics.events_query_ms.record(1, &[]);
        metrics.stream_query_ms.record(1, &[]);
        metrics
            .http_requests
            .record(0.1, &[KeyValue::new("route", "/")]);
        metrics.bytes_written.add(1, &[]);
        metrics.bytes_read.add(1, &[]);
        metrics.pkarr_publishes.add(1, &[]);
        metrics.user_republishes.add(1, &[]);
        let rendered = metrics.render().unwrap();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/grafana-dashboard.json")).unwrap();
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.contains('_') && !word.starts_with("histogram"));
                for name in names {
                    assert!(
                        rendered.contains(&format!("\n{name}")),
                        "{name} (in {expr})"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "{checked}");
    }

    #[test]
    fn routes_are_templates() {
        assert_eq!(route_of("/pub/a/b.txt"), "/pub/{path}");
        assert_eq!(route_of("/pub/a/"), "/pub/{dir}/");
        assert_eq!(route_of("/storage/x/pub/a"), "/storage/{user}/{path}");
        assert_eq!(route_of("/signup_tokens/AAAA"), "/signup_tokens/{token}");
        assert_eq!(route_of("/priv/x"), "other");
    }
}
