//! A `tracing` layer that keeps every warning and error in the process's
//! [`RecentErrors`] ring, for the status page. Added beside the log output, it changes
//! nothing about what is logged or how.

use std::fmt::Write as _;

use ferroftp_server::RecentErrors;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Records WARN and ERROR events in [`RecentErrors::global`] as `target: message key=value…`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentErrorsLayer;

impl<S: Subscriber> Layer<S> for RecentErrorsLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let level = *event.metadata().level();
        let level = if level == Level::ERROR {
            "ERROR"
        } else if level == Level::WARN {
            "WARN"
        } else {
            return;
        };
        RecentErrors::global().push(level, format_event(event));
    }
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
