//! The two text formats `/metrics` answers in, shared by both programs: Prometheus' text format
//! 0.0.4 (the default, and what `Accept: text/plain` gets) and OpenMetrics 1.0.0 (what
//! `Accept: application/openmetrics-text` gets, Prometheus' own scrapes included).
//!
//! `prometheus-client` writes only OpenMetrics, whose counters are declared without their
//! `_total` suffix and whose page ends in `# EOF`: served as `text/plain`, `promtool check
//! metrics` and other text-format parsers refuse it. The Prometheus text is therefore derived
//! from the OpenMetrics text, line by line, rather than kept as a second encoder of every metric.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// One of the two formats, chosen per scrape by [`Format::negotiate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it prefers
    /// `application/openmetrics-text` (by its `q`) to `text/plain` and `*/*`, else Prometheus'
    /// text format, which is also the answer to no header at all (curl, a browser).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                "text/plain" | "text/*" | "*/*" => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics > text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The registry's metrics in `format`.
pub fn render(registry: &Registry, format: Format) -> String {
    let mut openmetrics = String::new();
    if let Err(error) = encode(&mut openmetrics, registry) {
        // Writing to a String does not fail; a metric whose encoding does is a bug to see.
        tracing::error!(%error, "metrics not encoded");
    }
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Prometheus => prometheus_text(&openmetrics),
    }
}

/// Prometheus' text format from OpenMetrics text as `prometheus-client` writes it (each family's
/// `# HELP`, then `# TYPE`, then `# UNIT` if any, then its samples; no exemplars here):
/// a counter family is declared under its sample name (`x_total`), types the text format lacks
/// become the nearest it has, and `# UNIT` and `# EOF` go.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn prometheus_scrapes_get_openmetrics_and_everyone_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
            application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        for text in [
            None,
            Some("text/plain"),
            Some("text/plain;version=0.0.4"),
            Some("*/*"),
            Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Some("application/openmetrics-text;q=0"),
            Some("application/json"),
        ] {
            assert_eq!(Format::negotiate(text), Format::Prometheus, "{text:?}");
        }
    }

    #[test]
    fn counters_are_declared_by_their_sample_name_and_nothing_openmetrics_only_is_left() {
        let mut registry = Registry::with_prefix("demo");
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("requests", "Requests served", counter);
        registry.register("latency_seconds", "Latency", Histogram::new([0.1]));
        let openmetrics = render(&registry, Format::OpenMetrics);
        assert!(openmetrics.contains("# TYPE demo_requests counter\n"));
        assert!(openmetrics.ends_with("# EOF\n"));
        let text = render(&registry, Format::Prometheus);
        assert_eq!(
            text,
            "# HELP demo_requests_total Requests served.\n\
             # TYPE demo_requests_total counter\n\
             demo_requests_total 1\n\
             # HELP demo_latency_seconds Latency.\n\
             # TYPE demo_latency_seconds histogram\n\
             demo_latency_seconds_sum 0.0\n\
             demo_latency_seconds_count 0\n\
             demo_latency_seconds_bucket{le=\"0.1\"} 0\n\
             demo_latency_seconds_bucket{le=\"+Inf\"} 0\n"
        );
    }
}
