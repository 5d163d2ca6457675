//! OpenTelemetry export over OTLP/HTTP (protobuf), off unless `[otlp] endpoint` is set: request spans from
//! `tracing` through a batch span exporter, and every metric through a periodic reader beside the
//! Prometheus one. Both run on their own threads and flush at shutdown.

use std::time::Duration;

use anyhow::Context;
use homestead_config::Otlp;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::PeriodicReader;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The OTLP pipelines, when configured.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    metric_reader: Option<PeriodicReader<MetricExporter>>,
}

impl Telemetry {
    /// Builds the exporters `otlp` asks for (none without an endpoint).
    pub fn from_config(otlp: &Otlp) -> anyhow::Result<Self> {
        let Some(endpoint) = otlp.endpoint.as_deref() else {
            return Ok(Self::default());
        };
        let base = endpoint.trim_end_matches('/');
        let resource = Resource::builder()
            .with_service_name(otlp.service_name.clone())
            .build();
        let spans = SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
            .context("otlp.endpoint: cannot build the span exporter")?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource)
            .build();
        let metrics = MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/metrics"))
            .build()
            .context("otlp.endpoint: cannot build the metric exporter")?;
        let metric_reader = PeriodicReader::builder(metrics)
            .with_interval(Duration::from_secs(otlp.metrics_interval_secs.get()))
            .build();
        Ok(Self {
            tracer_provider: Some(tracer_provider),
            metric_reader: Some(metric_reader),
        })
    }

    /// The tracer for the `tracing` bridge, if traces are exported.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.tracer_provider
            .as_ref()
            .map(|provider| provider.tracer("homestead"))
    }

    /// The metric reader to add to the meter provider, if metrics are exported (taken once).
    pub fn take_metric_reader(&mut self) -> Option<PeriodicReader<MetricExporter>> {
        self.metric_reader.take()
    }

    /// Exports what is buffered and stops the span pipeline.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.tracer_provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(%err, "flushing spans to the OTLP collector failed");
        }
    }
}
