//! Logging for the plugin process: `tracing` events written to stderr as hclog JSON lines,
//! which OpenTofu/Terraform read and merge into their own log (TF_LOG, TF_LOG_PATH).

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The level asked for by TF_LOG_PROVIDER, else TF_LOG ("JSON" means trace, as in Terraform).
pub fn level_from_env(provider: Option<&str>, core: Option<&str>) -> Option<tracing::Level> {
    let raw = provider
        .filter(|s| !s.is_empty())
        .or(core.filter(|s| !s.is_empty()))?;
    match raw.to_ascii_lowercase().as_str() {
        "trace" | "json" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warn" => Some(tracing::Level::WARN),
        "error" => Some(tracing::Level::ERROR),
        "off" => None,
        _ => Some(tracing::Level::TRACE),
    }
}

/// Installs the stderr subscriber, unless PLUGIN_LOG_FILE is set: then tf-provider installs
/// its own writer to that file and a second global subscriber would panic.
pub fn init() {
    if std::env::var_os("PLUGIN_LOG_FILE").is_some() {
        return;
    }
    let provider = std::env::var("TF_LOG_PROVIDER").ok();
    let core = std::env::var("TF_LOG").ok();
    let Some(level) = level_from_env(provider.as_deref(), core.as_deref()) else {
        return;
    };
    // Our crate at the asked level; the gRPC plumbing only at warn, or trace logs drown.
    let filter = EnvFilter::new(format!(
        "warn,terraform_provider_docker={lvl},tf_provider={lvl}",
        lvl = level.as_str().to_ascii_lowercase()
    ));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(HcLog)
        .try_init();
}

/// One JSON object a line, in the shape go-plugin's hclog parser understands.
pub struct HcLog;

impl<S, N> FormatEvent<S, N> for HcLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut obj = fields.0;
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => "trace",
            tracing::Level::DEBUG => "debug",
            tracing::Level::INFO => "info",
            tracing::Level::WARN => "warn",
            tracing::Level::ERROR => "error",
        };
        obj.insert("@level".into(), level.into());
        obj.insert("@module".into(), "docker".into());
        obj.insert("@caller".into(), event.metadata().target().into());
        // go-plugin parses `@timestamp` with the layout 2006-01-02T15:04:05.000000Z07:00:
        // exactly six fractional digits, or the whole line is logged raw at debug level.
        let ts = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))
            .unwrap_or_default();
        obj.insert("@timestamp".into(), ts.into());
        if let Some(msg) = obj.remove("message") {
            obj.insert("@message".into(), msg);
        }
        writeln!(
            writer,
            "{}",
            serde_json::Value::Object(obj.into_iter().collect())
        )
    }
}

#[derive(Default)]
struct JsonFields(std::collections::BTreeMap<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_hclog_json_with_go_plugin_timestamps() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .event_format(HcLog)
            .finish();
        tracing::subscriber::with_default(sub, || tracing::info!(elapsed_ms = 5u64, "hello"));
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["@level"], "info");
        assert_eq!(v["@message"], "hello");
        assert_eq!(v["elapsed_ms"], 5);
        let ts = v["@timestamp"].as_str().unwrap();
        // 2026-11-23T04:43:50.601901Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert_eq!(&ts[19..20], ".");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn provider_level_wins_over_core_level() {
        assert_eq!(
            level_from_env(Some("debug"), Some("trace")),
            Some(tracing::Level::DEBUG)
        );
        assert_eq!(
            level_from_env(None, Some("INFO")),
            Some(tracing::Level::INFO)
        );
        assert_eq!(
            level_from_env(Some(""), Some("json")),
            Some(tracing::Level::TRACE)
        );
        assert_eq!(level_from_env(None, None), None);
        assert_eq!(level_from_env(Some("off"), None), None);
    }
}
