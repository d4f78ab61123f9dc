//! Logging for the plugin process: `tracing` events as hclog JSON lines on stderr, which
//! OpenTofu/Terraform merge into their own log (TF_LOG, TF_LOG_PATH), and in PLUGIN_LOG_FILE.
//! Both get the same filter and the same redaction, and the file is the user's alone (0600).

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::secret;

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

/// Our crates at `level`; everything else (gRPC, HTTP, TLS plumbing) only at warn: their trace
/// output is noise, and some of it (frames, headers) would carry what we redact.
fn filter(level: tracing::Level) -> EnvFilter {
    EnvFilter::new(format!(
        "warn,terraform_provider_docker={lvl},tf_provider={lvl}",
        lvl = level.as_str().to_ascii_lowercase()
    ))
}

/// Installs the subscriber: stderr at the level TF_LOG_PROVIDER/TF_LOG ask for, and the file
/// `plugin_log_file` (PLUGIN_LOG_FILE, which the caller takes out of the environment so that
/// tf-provider does not install its own unfiltered writer) at that level, or trace when none
/// is asked for. A file that cannot be opened is reported on stderr and left out.
pub fn init(plugin_log_file: Option<&Path>) {
    let provider = std::env::var("TF_LOG_PROVIDER").ok();
    let core = std::env::var("TF_LOG").ok();
    let level = level_from_env(provider.as_deref(), core.as_deref());
    let file = plugin_log_file.and_then(|path| match open_private_log(path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "terraform-provider-docker: cannot open PLUGIN_LOG_FILE {}: {e}",
                path.display()
            );
            None
        }
    });
    let stderr = level.map(|l| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(HcLog)
            .with_filter(filter(l))
    });
    let file = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(Mutex::new(f))
            .event_format(HcLog)
            .with_filter(filter(level.unwrap_or(tracing::Level::TRACE)))
    });
    if stderr.is_none() && file.is_none() {
        return;
    }
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(stderr).with(file),
    );
}

/// Opens `path` for appending (every provider process of one OpenTofu run adds its lines),
/// created 0600, and made 0600 if it existed with a wider mode: the log names hosts, ids and
/// paths that are nobody else's business, even with every secret redacted.
pub fn open_private_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o777 != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
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
        // The last guard: whatever a call site passed, secret fields and secret-shaped
        // strings do not reach the log.
        for (name, value) in obj.iter_mut() {
            if secret::is_secret_name(name) {
                *value = secret::REDACTED.into();
            } else {
                // A body logged as text is JSON by its keys, anything else by its shape.
                secret::redact_json(value);
            }
        }
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

    /// Lines the HcLog format writes for what `emit` logs, through `filter` when given.
    fn captured(level: Option<tracing::Level>, emit: impl FnOnce()) -> String {
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
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .event_format(HcLog);
        match level {
            Some(l) => tracing::subscriber::with_default(
                tracing_subscriber::registry().with(layer.with_filter(filter(l))),
                emit,
            ),
            None => {
                tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit)
            }
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn lines_carry_no_secret_whatever_the_call_site_passed() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let body = serde_json::json!({"droplet": {"name": "r", "user_data": "#cloud-config HOSTKEY"}, "db_password": "pw-123456789"}).to_string();
        let text = captured(None, || {
            tracing::info!(password = "pw-123456789", name = "registry", "a user");
            tracing::trace!(body = %body, "request body");
            tracing::debug!(
                header = "Authorization: Bearer dop_v1_abcdef0123456789abcdef",
                "sent"
            );
            tracing::warn!("converge said {pem}");
            tracing::info!(spaces_secret_key = ?Some("s3cr3t-s3cr3t"), "key minted");
        });
        for secret in [
            "pw-123456789",
            "HOSTKEY",
            "dop_v1_abcdef",
            "b3BlbnNzaC1",
            "s3cr3t-s3cr3t",
        ] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
        // What is not secret stays readable.
        for kept in [
            "\"name\":\"registry\"",
            "request body",
            "[redacted private key]",
            "\\\"name\\\":\\\"r\\\"",
        ] {
            assert!(text.contains(kept), "{kept} missing:\n{text}");
        }
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn other_crates_log_at_warn_only_even_at_trace() {
        let text = captured(Some(tracing::Level::TRACE), || {
            tracing::trace!(target: "h2::codec", "frame HEADERS authorization=...");
            tracing::debug!(target: "hyper::proto", "parsed headers");
            tracing::warn!(target: "rustls::conn", "peer closed");
            tracing::trace!("ours at trace");
        });
        assert!(
            !text.contains("frame HEADERS") && !text.contains("parsed headers"),
            "{text}"
        );
        assert!(
            text.contains("peer closed") && text.contains("ours at trace"),
            "{text}"
        );
    }

    #[test]
    fn the_plugin_log_file_is_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.log");
        drop(open_private_log(&fresh).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o600);
        // An existing, world-readable file is narrowed, and appended to, not truncated.
        let existing = dir.path().join("existing.log");
        std::fs::write(&existing, "earlier process\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = open_private_log(&existing).unwrap();
        std::io::Write::write_all(&mut f, b"this one\n").unwrap();
        assert_eq!(mode(&existing), 0o600);
        assert_eq!(
            std::fs::read_to_string(&existing).unwrap(),
            "earlier process\nthis one\n"
        );
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
