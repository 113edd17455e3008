//! Channel patterns: how a token's grants and `auth.private_channels` name
//! channels.

use crate::names::{ChannelName, MAX_CHANNEL_LEN};

/// A channel pattern: an exact channel name (`news`), a prefix followed by a
/// trailing `*` (`orders.*` matches every channel whose name starts with
/// `orders.`, such as `orders.eu` or `orders.eu.1`, but not `orders`), or
/// `*` alone, which matches every channel. The prefix follows the channel
/// grammar (`A-Z a-z 0-9 _ - . : @`); `*` anywhere else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Prefix(String::new()));
        }
        let (name, prefix) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
            return Err(format!("pattern {text:?} is empty or too long"));
        }
        ChannelName::parse(name).map_err(|e| format!("pattern {text:?}: {e}"))?;
        Ok(if prefix {
            Self::Prefix(name.to_owned())
        } else {
            Self::Exact(name.to_owned())
        })
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self {
            Self::Exact(name) => name == channel,
            Self::Prefix(prefix) => channel.len() > prefix.len() && channel.starts_with(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_grammar() {
        let p = |t: &str| Pattern::parse(t).unwrap();
        assert!(p("news").matches("news"));
        assert!(!p("news").matches("news.eu"));
        assert!(p("orders.*").matches("orders.eu"));
        assert!(p("orders.*").matches("orders.eu.1"));
        assert!(!p("orders.*").matches("orders"));
        assert!(!p("orders.*").matches("ordersx"));
        assert!(p("*").matches("anything"));
        for bad in ["", "a*b", "**", "a b*", ".*.", "x,y", "*a"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
