//! The access policy: the one decision "may this caller do this to this
//! channel", which every way in asks — `/stream` and `/publish`, the kill
//! endpoints, listings and pulses, the Mercure hub's subscribe and publish
//! routes, and the bridge between channels and the hub in both directions.
//! A protocol adapter finds the caller's credential in its own way (our
//! token in a header, cookie or query parameter; a Mercure access token)
//! and may add rules of its own; it never decides a channel's access
//! itself.
//!
//! The rules, with `[auth]` on (with it off every channel is open to
//! everyone, which the configuration allows only with no private channel):
//!
//! | action | needs |
//! | --- | --- |
//! | [`Action::Publish`] on any channel | a credential whose rights cover publishing to it |
//! | [`Action::Subscribe`] on a *protected* channel (matching `private_channels`, or every channel with `anonymous_subscribe = false`) | a credential whose rights cover subscribing to it |
//! | [`Action::Subscribe`] on any other channel | nothing |
//! | [`Action::Inspect`] (see a channel in listings, its details and pulses) | as `Subscribe`, or the `monitor` grant |
//! | read the pulse book (`GET /pulses`) | the `monitor` grant |
//!
//! A credential's [`Rights`] are what its own format grants: our tokens'
//! channel patterns (`sse.publish`, `sse.subscribe`, `sse.monitor`), a
//! Mercure token's topic matchers (a channel is the hub topic of the same
//! name). The decision is the same whichever route or format brought them.

use crate::names::ChannelName;

use super::pattern::Pattern;

/// What a caller wants to do to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Receive its events: a stream, a replay, a history read, the hub's
    /// copy of its events, a pulse that names it.
    Subscribe,
    /// Add events to it: a publish, a kill notice, a hub update on its name.
    Publish,
    /// See that it exists and what it holds: listings, its details, its
    /// pulses.
    Inspect,
}

/// What a verified credential grants, whatever its format.
pub trait Rights {
    /// Whether the credential covers `action` on `channel` by its own
    /// grants (`Inspect` is decided by the policy from `Subscribe` and
    /// [`Rights::monitors`]).
    fn covers(&self, action: Action, channel: &ChannelName) -> bool;

    /// Whether it may see every channel's metadata and the pulse book (an
    /// operator's console), without reading any channel's events.
    fn monitors(&self) -> bool {
        false
    }
}

/// Why the policy said no: the caller's answer is `401` for the first,
/// `403` for the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The action needs a credential and the caller presented none.
    CredentialRequired,
    /// The caller's credential does not cover the action.
    NotGranted,
}

/// The access rules of one deployment (the `[auth]` section), asked by
/// every way in. Built once at start and shared.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// `auth.enabled`: without it every action is open.
    enabled: bool,
    /// `auth.private_channels`.
    private: Vec<Pattern>,
    /// `auth.anonymous_subscribe`.
    anonymous_subscribe: bool,
}

impl AccessPolicy {
    /// The policy of `[auth]`: `private` are its `private_channels`
    /// (already parsed).
    pub fn new(enabled: bool, private: Vec<Pattern>, anonymous_subscribe: bool) -> Self {
        Self {
            enabled,
            private,
            anonymous_subscribe,
        }
    }

    /// A policy that allows everything (auth off).
    pub fn open() -> Self {
        Self {
            anonymous_subscribe: true,
            ..Self::default()
        }
    }

    /// Whether `[auth]` is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether reading `channel` (its events or its metadata) needs a
    /// credential.
    pub fn protects(&self, channel: &ChannelName) -> bool {
        self.enabled
            && (!self.anonymous_subscribe
                || self.private.iter().any(|p| p.matches(channel.as_str())))
    }

    /// Whether `action` on `channel` needs a credential at all (so a
    /// caller's token need not even be read when it does not).
    pub fn needs_credential(&self, action: Action, channel: &ChannelName) -> bool {
        match action {
            Action::Publish => self.enabled,
            Action::Subscribe | Action::Inspect => self.protects(channel),
        }
    }

    /// Whether anyone, with no credential, may do `action` on `channel`.
    pub fn allows_anyone(&self, action: Action, channel: &ChannelName) -> bool {
        !self.needs_credential(action, channel)
    }

    /// The decision: may the caller whose credential grants `rights` (none:
    /// an anonymous caller) do `action` on `channel`?
    pub fn decide(
        &self,
        rights: Option<&dyn Rights>,
        action: Action,
        channel: &ChannelName,
    ) -> Result<(), Denied> {
        if !self.needs_credential(action, channel) {
            return Ok(());
        }
        let rights = rights.ok_or(Denied::CredentialRequired)?;
        let granted = match action {
            Action::Inspect => rights.monitors() || rights.covers(Action::Subscribe, channel),
            action => rights.covers(action, channel),
        };
        if granted {
            Ok(())
        } else {
            Err(Denied::NotGranted)
        }
    }

    /// May the caller read the pulse book (every client's liveness, across
    /// channels)? Anyone with auth off; the `monitor` grant with it on.
    pub fn decide_pulse_book(&self, rights: Option<&dyn Rights>) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        match rights {
            None => Err(Denied::CredentialRequired),
            Some(rights) if rights.monitors() => Ok(()),
            Some(_) => Err(Denied::NotGranted),
        }
    }

    /// May an anonymous caller report a pulse that names no channel? With
    /// `anonymous_subscribe = false` a pulse needs a credential, as a
    /// stream does.
    pub fn decide_unscoped_pulse(&self, rights: Option<&dyn Rights>) -> Result<(), Denied> {
        if self.enabled && !self.anonymous_subscribe && rights.is_none() {
            Err(Denied::CredentialRequired)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rights over a fixed set of channels.
    struct Grants {
        publish: &'static [&'static str],
        subscribe: &'static [&'static str],
        monitor: bool,
    }

    impl Rights for Grants {
        fn covers(&self, action: Action, channel: &ChannelName) -> bool {
            let list = match action {
                Action::Publish => self.publish,
                Action::Subscribe => self.subscribe,
                Action::Inspect => &[],
            };
            list.contains(&channel.as_str())
        }

        fn monitors(&self) -> bool {
            self.monitor
        }
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).expect("a valid name")
    }

    fn policy(anonymous_subscribe: bool) -> AccessPolicy {
        let private = vec![Pattern::parse("user.*").expect("a valid pattern")];
        AccessPolicy::new(true, private, anonymous_subscribe)
    }

    const READER: Grants = Grants {
        publish: &[],
        subscribe: &["user.9"],
        monitor: false,
    };
    const WRITER: Grants = Grants {
        publish: &["user.9"],
        subscribe: &[],
        monitor: false,
    };
    const MONITOR: Grants = Grants {
        publish: &[],
        subscribe: &[],
        monitor: true,
    };

    /// With auth off everything is open, to everyone.
    #[test]
    fn auth_off_is_open() {
        let open = AccessPolicy::open();
        for action in [Action::Publish, Action::Subscribe, Action::Inspect] {
            assert_eq!(open.decide(None, action, &channel("user.9")), Ok(()));
        }
        assert_eq!(open.decide_pulse_book(None), Ok(()));
    }

    /// Private channels need a subscribe grant to be read or inspected;
    /// public ones need nothing; publishing always needs a grant.
    #[test]
    fn the_table() {
        let policy = policy(true);
        let (private, public) = (channel("user.9"), channel("news"));
        use Action::*;
        use Denied::*;
        assert_eq!(policy.decide(None, Subscribe, &public), Ok(()));
        assert_eq!(policy.decide(None, Inspect, &public), Ok(()));
        assert_eq!(
            policy.decide(None, Subscribe, &private),
            Err(CredentialRequired)
        );
        assert_eq!(
            policy.decide(None, Inspect, &private),
            Err(CredentialRequired)
        );
        assert_eq!(
            policy.decide(None, Publish, &public),
            Err(CredentialRequired)
        );
        assert_eq!(policy.decide(Some(&READER), Subscribe, &private), Ok(()));
        assert_eq!(policy.decide(Some(&READER), Inspect, &private), Ok(()));
        assert_eq!(
            policy.decide(Some(&READER), Publish, &private),
            Err(NotGranted)
        );
        assert_eq!(policy.decide(Some(&WRITER), Publish, &private), Ok(()));
        assert_eq!(
            policy.decide(Some(&WRITER), Subscribe, &private),
            Err(NotGranted)
        );
        assert_eq!(
            policy.decide(Some(&WRITER), Subscribe, &channel("user.8")),
            Err(NotGranted)
        );
        assert_eq!(policy.decide(Some(&MONITOR), Inspect, &private), Ok(()));
        assert_eq!(
            policy.decide(Some(&MONITOR), Subscribe, &private),
            Err(NotGranted)
        );
    }

    /// `anonymous_subscribe = false` protects every channel, and unscoped
    /// pulses.
    #[test]
    fn no_anonymous_subscribers() {
        let policy = policy(false);
        assert_eq!(
            policy.decide(None, Action::Subscribe, &channel("news")),
            Err(Denied::CredentialRequired)
        );
        assert!(policy.protects(&channel("news")));
        assert_eq!(
            policy.decide_unscoped_pulse(None),
            Err(Denied::CredentialRequired)
        );
        assert_eq!(policy.decide_unscoped_pulse(Some(&READER)), Ok(()));
    }

    /// The pulse book needs the monitor grant.
    #[test]
    fn pulse_book() {
        let policy = policy(true);
        assert_eq!(
            policy.decide_pulse_book(None),
            Err(Denied::CredentialRequired)
        );
        assert_eq!(
            policy.decide_pulse_book(Some(&READER)),
            Err(Denied::NotGranted)
        );
        assert_eq!(policy.decide_pulse_book(Some(&MONITOR)), Ok(()));
    }
}
