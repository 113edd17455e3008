//! The names everything shares: channel names and event types, validated by
//! their own constructors. A leaf: configuration, tokens, the broker and the
//! HTTP layer all use them, and they import nothing of the crate.

use std::{fmt, sync::Arc};

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest event type accepted.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Event types starting with this are the broker's own notices.
pub const RESERVED_EVENT_PREFIX: &str = "broker.";

/// A validated channel name: 1 to 128 of `A-Z a-z 0-9 _ - . : @`.
/// `,` and `=` stay out because they delimit multi-channel cursors, and `/`
/// because the name is one path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("channel name is empty".into());
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(format!(
                "channel name is longer than {MAX_CHANNEL_LEN} bytes"
            ));
        }
        if let Some(bad) = name.chars().find(|c| !is_channel_char(*c)) {
            return Err(format!(
                "channel name contains {bad:?}; allowed are A-Z a-z 0-9 _ - . : @"
            ));
        }
        Ok(Self(name.into()))
    }

    /// A channel of the broker's own, outside the grammar (it starts with
    /// `~`) so that no HTTP client can name it, to publish, subscribe or list.
    pub fn internal(name: &str) -> Self {
        Self(format!("~{name}").into())
    }

    /// A name read back from the broker's own records (the cluster bus):
    /// a channel name, or an internal one.
    pub fn parse_recorded(name: &str) -> Result<Self, String> {
        match name.strip_prefix('~') {
            Some(internal) => Self::parse(internal).map(|_| Self(name.into())),
            None => Self::parse(name),
        }
    }

    /// Whether this is one of the broker's [`internal`](Self::internal) channels.
    pub fn is_internal(&self) -> bool {
        self.0.starts_with('~')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated event type: 1 to 64 printable ASCII characters without spaces,
/// not starting with the reserved `broker.` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(Arc<str>);

impl EventType {
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_EVENT_TYPE_LEN {
            return Err(format!(
                "event type must be 1 to {MAX_EVENT_TYPE_LEN} characters"
            ));
        }
        if !name.chars().all(|c| c.is_ascii_graphic()) {
            return Err("event type may only contain printable ASCII without spaces".into());
        }
        if name.starts_with(RESERVED_EVENT_PREFIX) {
            return Err(format!(
                "event types starting with {RESERVED_EVENT_PREFIX:?} are reserved"
            ));
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of the broker's own notice types (`broker.gap`), which
    /// [`Self::parse`] refuses from publishers.
    pub(crate) fn notice(name: &'static str) -> Self {
        debug_assert!(name.starts_with(RESERVED_EVENT_PREFIX));
        Self(name.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel names follow the documented grammar.
    #[test]
    fn channel_grammar() {
        for ok in [
            "test",
            "orders.eu-1",
            "user:42@site",
            "a_b",
            &"x".repeat(128),
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a,b",
            "a=b",
            "é",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Event types reject line breaks, spaces and the reserved prefix.
    #[test]
    fn event_type_grammar() {
        assert!(EventType::parse("user.created").is_ok());
        for bad in ["", "a b", "a\nb", "a\0", "broker.gap", &"x".repeat(65)] {
            assert!(EventType::parse(bad).is_err(), "{bad:?}");
        }
    }
}
