//! A `tracing` layer that keeps every warning and error in the process's
//! [`RecentErrors`] ring, for the status page. Added beside the log output, it changes
//! nothing about what is logged or how. The fields of the spans around the event (a
//! session's client address and user) come along when the text formatter recorded them.

use std::fmt::Write as _;

use ferroftp_server::RecentErrors;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Records WARN and ERROR events in [`RecentErrors::global`] as
/// `span{fields}: target: message key=value…`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentErrorsLayer;

impl<S> Layer<S> for RecentErrorsLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let level = *event.metadata().level();
        let level = if level == Level::ERROR {
            "ERROR"
        } else if level == Level::WARN {
            "WARN"
        } else {
            return;
        };
        let mut spans = String::new();
        if let Some(scope) = context.event_scope(event) {
            for span in scope.from_root() {
                spans.push_str(span.name());
                // What the text formatter recorded for the span, when it is the one in use.
                if let Some(fields) = span.extensions().get::<FormattedFields<DefaultFields>>()
                    && !fields.is_empty()
                {
                    spans.push('{');
                    push_without_ansi_styles(&mut spans, fields);
                    spans.push('}');
                }
                spans.push_str(": ");
            }
        }
        RecentErrors::global().push(level, format!("{spans}{}", format_event(event)));
    }
}

/// Appends `text` without its ANSI SGR sequences (`ESC [ … m`): the formatter colours the
/// fields it records when the log goes to a terminal, and the page shows plain text.
fn push_without_ansi_styles(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        out.push_str(&rest[..start]);
        let sequence = &rest[start..];
        match sequence.find('m') {
            Some(end) if sequence[1..].starts_with('[') => rest = &sequence[end + 1..],
            _ => {
                // Not a style sequence: the escape character alone is dropped.
                rest = &sequence[1..];
            }
        }
    }
    out.push_str(rest);
}

fn format_event(event: &Event<'_>) -> String {
    let mut text = MessageText {
        message: String::new(),
        fields: String::new(),
    };
    event.record(&mut text);
    format!(
        "{}: {}{}",
        event.metadata().target(),
        text.message,
        text.fields
    )
}

struct MessageText {
    message: String,
    fields: String,
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_fields_of_the_spans_around_the_event() {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish()
            .with(RecentErrorsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", peer = "192.0.2.7:40000");
            let _entered = span.enter();
            tracing::warn!("refused: recent-errors-span-test");
        });
        let kept: Vec<_> = RecentErrors::global()
            .newest_first()
            .into_iter()
            .filter(|entry| entry.message.contains("recent-errors-span-test"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(
            kept[0]
                .message
                .starts_with("session{peer=\"192.0.2.7:40000\"}: "),
            "{}",
            kept[0].message
        );
    }

    #[test]
    fn ansi_styles_are_removed() {
        let mut out = String::new();
        push_without_ansi_styles(&mut out, "\x1b[3mpeer\x1b[0m\x1b[2m=\x1b[0m\"x\" \x1b end");
        assert_eq!(out, "peer=\"x\"  end");
    }

    #[test]
    fn keeps_warnings_and_errors_with_their_fields_only() {
        let subscriber = tracing_subscriber::registry().with(RecentErrorsLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(
                user = "mallory",
                port = 21,
                "login failed: recent-errors-layer-test"
            );
            tracing::error!("disk gone: recent-errors-layer-test");
        });
        let kept: Vec<_> = RecentErrors::global()
            .newest_first()
            .into_iter()
            .filter(|entry| entry.message.contains("recent-errors-layer-test"))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].level, "ERROR");
        assert!(
            kept[0]
                .message
                .ends_with("disk gone: recent-errors-layer-test")
        );
        assert_eq!(kept[1].level, "WARN");
        assert!(
            kept[1]
                .message
                .ends_with("login failed: recent-errors-layer-test user=mallory port=21"),
            "{}",
            kept[1].message
        );
    }
}
