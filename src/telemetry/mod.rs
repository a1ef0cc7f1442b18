//! Logs (tracing, human-readable or JSON on stderr), traces (OpenTelemetry over OTLP/HTTP, when
//! configured) and metrics (`metrics`, served by `server`). Fields and span attributes carry
//! ids, steps and fingerprints, never secret values: secrets live in `secrecy` types whose
//! `Debug` prints no value.

pub mod metrics;
pub mod server;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace pipeline alive; dropping it sends the spans still buffered.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: sending the last traces failed: {e}");
        }
    }
}

/// Where traces go: `--otlp-endpoint URL`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables. `None` when none is set.
fn trace_pipeline(endpoint: Option<&str>) -> Result<Option<SdkTracerProvider>, String> {
    let from_env = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if endpoint.is_none() && !from_env {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(match endpoint {
            Some(e) => format!("{}/v1/traces", e.trim_end_matches('/')),
            None => String::new(),
        })
        .build()
        .map_err(|e| format!("cannot set up OTLP trace export: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("rotor")
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logs and, when configured, traces. Keep the result until the process ends.
pub fn init(format: LogFormat, filter: &str, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(filter));
    let traces = match trace_pipeline(otlp_endpoint) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("warning: {e}; traces are off");
            None
        }
    };
    let otel = traces
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("rotor")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    Telemetry { traces }
}
