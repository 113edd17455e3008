//! A broker alone decides its own transitions: [`Occupancy`] turns this
//! node's occupancy changes into the webhooks they mean (plain state, no
//! timers of its own: the intake task asks it when its next deadline is).
//! A channel whose last subscriber left is *vacating* for
//! `webhooks.vacated_after`; a subscriber back within it cancels the
//! vacancy (no `channel.vacated`, no second `channel.occupied`). Member
//! joins and leaves become webhooks as they come, without a grace.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use crate::{broker::occupancy::OccupancyChange, names::ChannelName};

/// The webhook `type` of a transition: what an [`OccupancyChange`] is
/// called once it was decided for the whole broker.
pub fn kind(transition: &OccupancyChange) -> &'static str {
    match transition {
        OccupancyChange::Occupied => "channel.occupied",
        OccupancyChange::Vacated => "channel.vacated",
        OccupancyChange::Joined { .. } => "member.joined",
        OccupancyChange::Left { .. } => "member.left",
    }
}

/// The occupancy of every channel of a node alone.
#[derive(Debug)]
pub struct Occupancy {
    /// Channels that are occupied or vacating (absent: vacant).
    channels: HashMap<ChannelName, State>,
    /// Vacating channels by deadline.
    deadlines: BTreeSet<(Instant, u64, ChannelName)>,
    /// `webhooks.vacated_after`.
    grace: Duration,
    /// Tells one vacancy of a channel from its next.
    next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Occupied,
    Vacating { until: Instant, id: u64 },
}

impl Occupancy {
    /// `grace`: how long a channel must stay vacant before it is vacated.
    pub fn new(grace: Duration) -> Self {
        Self {
            channels: HashMap::new(),
            deadlines: BTreeSet::new(),
            grace,
            next: 0,
        }
    }

    /// What this node's `change` of `channel` means for the broker (the
    /// transition a webhook announces), if anything yet.
    pub fn changed(
        &mut self,
        channel: &ChannelName,
        change: OccupancyChange,
        now: Instant,
    ) -> Option<OccupancyChange> {
        match change {
            OccupancyChange::Occupied => {
                match self.channels.insert(channel.clone(), State::Occupied) {
                    Some(State::Vacating { until, id }) => {
                        self.deadlines.remove(&(until, id, channel.clone()));
                        None
                    }
                    Some(State::Occupied) => None,
                    None => Some(OccupancyChange::Occupied),
                }
            }
            OccupancyChange::Vacated => {
                self.next = self.next.wrapping_add(1);
                let (until, id) = (now + self.grace, self.next);
                if let Some(State::Vacating { until, id }) = self
                    .channels
                    .insert(channel.clone(), State::Vacating { until, id })
                {
                    self.deadlines.remove(&(until, id, channel.clone()));
                }
                self.deadlines.insert((until, id, channel.clone()));
                None
            }
            member @ (OccupancyChange::Joined { .. } | OccupancyChange::Left { .. }) => {
                Some(member)
            }
        }
    }

    /// Channels that were occupied before a restart (the pending file
    /// remembers them): vacating from `now`, so that they are vacated
    /// unless a subscriber comes back within the grace, and one that does
    /// is not announced occupied again.
    pub fn resume(&mut self, channels: impl IntoIterator<Item = ChannelName>, now: Instant) {
        for channel in channels {
            self.changed(&channel, OccupancyChange::Vacated, now);
        }
    }

    /// When the next vacancy is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(until, _, _)| *until)
    }

    /// The channels whose grace ended by `now`: vacated.
    pub fn due(&mut self, now: Instant) -> Vec<ChannelName> {
        let mut vacated = Vec::new();
        while let Some(first) = self.deadlines.first().cloned()
            && first.0 <= now
        {
            self.deadlines.pop_first();
            let (until, id, channel) = first;
            if self.channels.get(&channel) == Some(&State::Vacating { until, id }) {
                self.channels.remove(&channel);
                vacated.push(channel);
            }
        }
        vacated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel is occupied once, vacated after the grace, and a return within the grace
    /// cancels the vacancy.
    #[test]
    fn vacancy_waits_for_the_grace() {
        let room = ChannelName::parse("room").unwrap();
        let grace = Duration::from_secs(5);
        let mut occupancy = Occupancy::new(grace);
        let t0 = Instant::now();
        let kind = |t: Option<OccupancyChange>| t.as_ref().map(kind);
        let occupied = || OccupancyChange::Occupied;
        let vacated = || OccupancyChange::Vacated;
        assert_eq!(
            kind(occupancy.changed(&room, occupied(), t0)),
            Some("channel.occupied")
        );
        assert!(occupancy.changed(&room, vacated(), t0).is_none());
        assert_eq!(occupancy.next_deadline(), Some(t0 + grace));
        // Back within the grace: nothing either way.
        assert!(occupancy.changed(&room, occupied(), t0).is_none());
        assert!(occupancy.due(t0 + grace * 2).is_empty());
        assert!(occupancy.changed(&room, vacated(), t0).is_none());
        assert!(occupancy.due(t0 + grace / 2).is_empty());
        assert_eq!(occupancy.due(t0 + grace), vec![room.clone()]);
        assert_eq!(
            kind(occupancy.changed(&room, occupied(), t0)),
            Some("channel.occupied")
        );
    }

    /// A channel remembered across a restart is vacating: vacated after the grace, or back
    /// without a second `channel.occupied`.
    #[test]
    fn resumed_channels_are_vacating() {
        let (room, hall) = (
            ChannelName::parse("room").unwrap(),
            ChannelName::parse("hall").unwrap(),
        );
        let grace = Duration::from_secs(5);
        let mut occupancy = Occupancy::new(grace);
        let t0 = Instant::now();
        occupancy.resume([room.clone(), hall.clone()], t0);
        assert!(
            occupancy
                .changed(&hall, OccupancyChange::Occupied, t0)
                .is_none()
        );
        assert_eq!(occupancy.due(t0 + grace), vec![room]);
    }
}
