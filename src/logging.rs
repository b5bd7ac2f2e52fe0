//! Logs on stderr in Istio's shapes: `<UTC time>\t<level>\t<message>` or, with
//! `--log_as_json`, one JSON object per line. stdout is reserved for the rules.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Result, UsageError};
use crate::gocompat::json_quote;

/// The `default` scope's level from `--log_output_level` (`info`, `default:debug`,
/// `ads:warn,default:info`). `None` turns logging off.
pub fn parse_output_level(spec: &str) -> Result<Option<Level>> {
    let mut level = Some(Level::INFO);
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scope, name) = item.rsplit_once(':').unwrap_or(("default", item));
        let parsed = match name {
            "debug" => Some(Level::DEBUG),
            "info" => Some(Level::INFO),
            "warn" => Some(Level::WARN),
            "error" | "fatal" => Some(Level::ERROR),
            "none" => None,
            other => return Err(UsageError::InvalidOutputLevel(other.to_string()).into()),
        };
        if scope == "default" {
            level = parsed;
        }
    }
    Ok(level)
}

/// Installs the global subscriber; a second call (tests running `run` twice) is a no-op.
/// Warnings are also collected for the run report, whatever the output level.
pub fn init(level: Option<Level>, json: bool) {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    let stderr = level.map(|level| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(IstioFormat { json })
            .with_filter(LevelFilter::from_level(level))
    });
    let warnings = WarningCollector.with_filter(LevelFilter::WARN);
    let _ = tracing_subscriber::registry().with(stderr).with(warnings).try_init();
}

/// Adds every WARN event's message to the run's journal (`exec::journal`), for `--report`.
struct WarningCollector;

impl<S: Subscriber> tracing_subscriber::Layer<S> for WarningCollector {
    fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        crate::exec::journal::record(|journal| journal.warnings.push(message.0));
    }
}

struct IstioFormat {
    json: bool,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for IstioFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut message = Message::default();
        event.record(&mut message);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            _ => "debug",
        };
        let time = utc_timestamp(SystemTime::now());
        if self.json {
            writeln!(writer, "{{\"level\":\"{level}\",\"time\":\"{time}\",\"msg\":{}}}", json_quote(&message.0))
        } else {
            writeln!(writer, "{time}\t{level}\t{}", message.0)
        }
    }
}

/// `2006-01-02T15:04:05.000000Z`, computed here to avoid a date-time dependency.
fn utc_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn levels() {
        assert_eq!(parse_output_level("default:info").unwrap(), Some(Level::INFO));
        assert_eq!(parse_output_level("debug").unwrap(), Some(Level::DEBUG));
        assert_eq!(parse_output_level("ads:debug,default:warn").unwrap(), Some(Level::WARN));
        assert_eq!(parse_output_level("default:none").unwrap(), None);
        assert_eq!(parse_output_level("default:bogus").unwrap_err().to_string(), "invalid output level 'bogus'");
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_782_000_000_123_456);
        assert_eq!(utc_timestamp(t), "2026-06-21T00:00:00.123456Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
