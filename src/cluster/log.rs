//! The shared event log in Redis: per channel one state hash (epoch, seq,
//! fence) and a Redis Stream of the retained events. Two Lua scripts
//! (`publish.lua`, `fetch.lua` beside this file), each atomic and in one
//! slot (the channel's keys share a hash tag, see `keys`):
//!
//! - **publish** checks and records the publishers' idempotency keys (a
//!   repeat is answered the first publish's id and stored again nowhere),
//!   assigns the next ids, appends the events to the
//!   stream (trimmed to `history.max_events`, and by age every 16th seq:
//!   reads skip older entries anyway), and publishes them
//!   as one message on the channel's bus (`SPUBLISH` on a Redis Cluster, so
//!   only the channel's shard carries it; `PUBLISH` otherwise), in that
//!   order and all or nothing. The publishers' 202 waits for the script
//!   (and, with `cluster.publish_wait_replicas`, for `WAIT`); an event that
//!   was acknowledged is therefore in the stream, and every following node
//!   sees it on the bus in seq order. A publish without idempotency keys
//!   makes six `redis.call`s (`TIME`, `HMGET` of the state, `HSET` of the
//!   seq, `XADD`, `HSET` of the fence, `PUBLISH`); the keys' TTLs are set
//!   again only once a quarter of `history.max_age` has passed (and by the
//!   nodes' presence tick for channels with subscribers), and the age trim
//!   runs every 16th seq.
//! - **fetch** reads the channel's epoch, head seq and retained events after
//!   a position: the replay for a resuming client, or the hole a channel
//!   actor found in what the bus brought.
//!
//! Epochs: the first script that touches a channel with no epoch sets one
//! from Redis' clock (`TIME`, in microseconds) and starts its seq and stream
//! afresh. A Redis restarted empty, or a channel whose keys expired after
//! `history.max_age` of silence (up to a quarter more: see
//! [`state_ttl_ms`]), thus gets a new epoch, and ids of the old
//! one are answered with an `unknown-epoch` gap, exactly like the
//! standalone broker after a restart. Stream entry ids are `<seq>-0`, so a
//! position is found without a lookup.
//!
//! Failover: replication is asynchronous, so a replica promoted to primary
//! may lack the newest events its old primary acknowledged (and the nodes
//! delivered). Reusing their seqs would make nodes that saw them drop the
//! new events as duplicates. The publish script therefore keeps a *fence*
//! beside the seq: the seq this server wrote last, written with replication
//! off, so only the server that wrote it has it. A primary whose fence does
//! not match the seq did not write the channel last; it moves the seq ahead
//! by [`FAILOVER_SEQ_JUMP`] before numbering, and the nodes see a hole they
//! read from the log and report as a `history-trimmed` gap. The fence goes
//! to the append-only file but not to replicas, so a Redis restarted from
//! its fsynced file goes on without a jump.
//!
//! A Redis restarted from an *older* state (an RDB snapshot, or the last
//! second an `appendfsync everysec` file had not written) has fence and seq
//! from the same moment, so the fence cannot tell. The nodes can: a channel
//! actor knows the newest seq it delivered, and passes it with its appends
//! and its catch-up reads (`FetchFrom::Since`); a log behind it jumps the
//! same way. So ids are not given twice once any node that delivered the
//! lost events publishes or reconnects (it reads what it missed as soon as
//! the bus is back); a publish through a node that never saw them may
//! still reuse one in between, which only those nodes' catch-up ends.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;

use super::{
    Cluster, ClusterError,
    script::{Lua, millis},
};
use crate::{
    broker::{
        EventId,
        event::Epoch,
        idempotency::Logged,
        log::{FetchFrom, Fetched, LogEntry, LogError, Record, SharedLog, Submission},
    },
    names::{ChannelName, EventType},
};

/// How far a channel's seq moves ahead when its primary changed (see the
/// module docs): more events than an old primary can acknowledge before its
/// replica takes over, and far below 2^53 (Lua numbers) after many
/// failovers.
pub const FAILOVER_SEQ_JUMP: u64 = 1 << 32;

/// KEYS: the channel's state hash, its stream, then the idempotency key of
/// each submission that has one, in order. ARGV: publish command, bus channel,
/// channel, max events, max age ms, failover jump, the epoch and seq the
/// publishing node delivered last ('' and 0 for none), the idempotency
/// window ms, then per submission its type ('' for none), data, the index
/// of its key in KEYS (0 for none) and its request digest ('' for none).
/// Returns {epoch, first seq, then per submission '' (stored: the stored
/// ones have consecutive seqs from the first, in order), 'r <epoch> <seq>'
/// (a repeat of the publish that stored that event) or 'x' (its key was
/// used with another digest)}; epoch '' and first 0 when none was stored.
///
/// Idempotency, all inside the script so a re-sent call (the Redis client
/// re-sends one whose answer died with a primary) or a retry through another
/// node finds what the first did: an idempotency key is one string key in
/// the channel's slot, `'<digest> <epoch> <seq>'` with the window as TTL.
/// Its cost in `INFO commandstats` terms: a keyed publish adds one `GET` and
/// one `SET … PX`; a repeat costs a `GET` and a `SET … KEEPTTL` (the same
/// value: a write, so that a `WAIT` after it also covers the first publish's
/// writes, which may have come through another connection) and nothing
/// else: no `INCRBY`, `XADD` or `PUBLISH`.
const PUBLISH: &str = include_str!("publish.lua");

/// KEYS: the channel's state hash, its stream. ARGV: mode ('head', 'all', 'after' or
/// 'since'), epoch and seq of the position, max age ms, failover jump, most
/// events (0: all), most data bytes (0: no bound).
/// Returns {epoch, head, then seq, time ms, type, data per retained event
/// after the position}. With 'after' and a position of another epoch or
/// beyond the head, every retained event. 'since' is 'after' from a node's
/// own position: one beyond the head (same epoch) moves the seq ahead by the
/// jump first. With a bound (a history page), the stream is read in
/// batches and the reading stops at `most` events, or after the event whose
/// data takes the total past the bytes: Redis reads no more than that.
const FETCH: &str = include_str!("fetch.lua");

/// The compiled scripts (loaded once, then run with EVALSHA).
pub struct Scripts {
    publish: Lua,
    fetch: Lua,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            publish: Lua::new(PUBLISH),
            fetch: Lua::new(FETCH),
        }
    }
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(Scripts::default)
}

/// How long a channel's keys live after their TTLs were last set: a
/// quarter more than `history.max_age` (at least a second), so that the
/// publish script, which sets them again only once a quarter of that has
/// passed, never lets them go sooner than `max_age` after the channel's
/// last publish. The scripts compute the same (`ttl + math.floor(ttl / 4)`).
pub(super) fn state_ttl_ms(max_age: Duration) -> u64 {
    let ttl = millis(max_age).max(1000);
    ttl.saturating_add(ttl / 4)
}

impl Cluster {
    /// Stores and broadcasts events of one channel, and says what became
    /// of each submission (see [`SharedLog::append`]) once Redis has them
    /// all (and, with `publish_wait_replicas`, as many replicas).
    pub async fn publish(
        &self,
        channel: &ChannelName,
        submissions: &[Submission],
        seen: Option<EventId>,
    ) -> Result<Vec<Logged>, ClusterError> {
        let keys = self.keys();
        let history = &self.inner.history;
        let publish = self.publish_command();
        let script = &scripts().publish;
        let keyed = submissions
            .iter()
            .filter(|s| s.idempotency.is_some())
            .count();
        let mut invocation = script.call(2 + keyed);
        invocation
            .arg(keys.state(channel))
            .arg(keys.stream(channel));
        let mut next_key = 3;
        let mut key_index = Vec::with_capacity(submissions.len());
        for submission in submissions {
            match &submission.idempotency {
                Some(idempotency) => {
                    invocation.arg(keys.idempotency(channel, &idempotency.key));
                    key_index.push(next_key);
                    next_key += 1;
                }
                None => key_index.push(0),
            }
        }
        invocation
            .arg(publish)
            .arg(keys.bus(channel))
            .arg(channel.as_str())
            .arg(history.max_events)
            .arg(millis(history.max_age))
            .arg(FAILOVER_SEQ_JUMP)
            .arg(seen.map_or(String::new(), |id| id.epoch.raw().to_string()))
            .arg(seen.map_or(0, |id| id.seq))
            .arg(millis(self.inner.idempotency_window).max(1));
        for (submission, index) in submissions.iter().zip(key_index) {
            let record = &submission.record;
            let digest = submission
                .idempotency
                .as_ref()
                .map_or(String::new(), |i| i.digest.to_hex());
            invocation
                .arg(record.event_type.as_ref().map_or("", EventType::as_str))
                .arg(&record.data)
                .arg(index)
                .arg(digest);
        }
        let mut conn = self.conn();
        let replicas = self.inner.publish_wait_replicas;
        let answer: Vec<redis::Value> = if replicas == 0 {
            self.run(script.run(&invocation, &mut conn)).await?
        } else {
            let wait = millis(self.inner.publish_wait_timeout);
            let (stored, acknowledged): (Vec<redis::Value>, u32) = self
                .run(script.run_then_wait(&invocation, replicas, wait, &mut conn))
                .await?;
            if acknowledged < replicas {
                return Err(ClusterError::NotReplicated(format!(
                    "the primary stored the events but {acknowledged} of {replicas} replicas \
                     confirmed them within {wait} ms: a failover could lose them (subscribers \
                     may have them already; a retry without an idempotency key may store them \
                     twice)"
                )));
            }
            stored
        };
        parse_logged(answer, submissions.len())
    }

    /// Reads the channel's epoch, head and retained events (see [`FetchFrom`]).
    pub async fn fetch(
        &self,
        channel: &ChannelName,
        from: FetchFrom,
    ) -> Result<Fetched, ClusterError> {
        let keys = self.keys();
        let (mode, epoch, seq) = match from {
            FetchFrom::Head => ("head", String::new(), 0),
            FetchFrom::All | FetchFrom::Page { after: None, .. } => ("all", String::new(), 0),
            FetchFrom::After(id)
            | FetchFrom::Page {
                after: Some(id), ..
            } => ("after", id.epoch.raw().to_string(), id.seq),
            FetchFrom::Since(id) => ("since", id.epoch.raw().to_string(), id.seq),
        };
        let (most, bytes) = match from {
            FetchFrom::Page { most, bytes, .. } => (most, bytes),
            _ => (0, 0),
        };
        let script = &scripts().fetch;
        let mut invocation = script.call(2);
        invocation
            .arg(keys.state(channel))
            .arg(keys.stream(channel))
            .arg(mode)
            .arg(epoch)
            .arg(seq)
            .arg(millis(self.inner.history.max_age))
            .arg(FAILOVER_SEQ_JUMP)
            .arg(most)
            .arg(bytes);
        let mut conn = self.conn();
        let fields: Vec<String> = self.run(script.run(&invocation, &mut conn)).await?;
        parse_fetched(fields)
    }
}

fn parse_epoch(text: &str) -> Result<Epoch, ClusterError> {
    text.parse()
        .map(Epoch::from_raw)
        .map_err(|_| ClusterError::Protocol(format!("epoch {text:?} is not a number")))
}

fn parse_u64(text: &str, what: &str) -> Result<u64, ClusterError> {
    text.parse()
        .map_err(|_| ClusterError::Protocol(format!("{what} {text:?} is not a number")))
}

/// Event types come from the log, where only valid ones were written.
pub(crate) fn parse_event_type(text: &str) -> Option<EventType> {
    (!text.is_empty())
        .then(|| EventType::parse(text).ok())
        .flatten()
}

/// A field of a script's answer as text, read in place.
fn text(field: &redis::Value) -> Result<&str, ClusterError> {
    match field {
        redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| {
            ClusterError::Protocol("a script answered a field that is not text".into())
        }),
        other => Err(ClusterError::Protocol(format!(
            "a script answered {other:?} for a field"
        ))),
    }
}

/// The publish script's answer: what became of each of `count`
/// submissions (the stored ones numbered in order from the first seq).
/// Taken as Redis sent it: the fields are read in place, no `String` each.
fn parse_logged(fields: Vec<redis::Value>, count: usize) -> Result<Vec<Logged>, ClusterError> {
    if fields.len() != count + 2 {
        return Err(ClusterError::Protocol(format!(
            "publish answered {} fields for {count} events",
            fields.len()
        )));
    }
    // Empty when nothing was stored (every event a repeat): read when used.
    let epoch = text(&fields[0])?;
    let mut next_seq = parse_u64(text(&fields[1])?, "seq")?;
    let mut logged = Vec::with_capacity(count);
    for answer in &fields[2..] {
        logged.push(match text(answer)? {
            "" => {
                let id = EventId {
                    epoch: parse_epoch(epoch)?,
                    seq: next_seq,
                };
                next_seq += 1;
                Logged::New(id)
            }
            "x" => Logged::KeyReused,
            repeat => {
                let mut parts = repeat.split(' ');
                let (Some("r"), Some(epoch), Some(seq), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(ClusterError::Protocol(format!(
                        "publish answered {repeat:?} for an event"
                    )));
                };
                Logged::Repeat(EventId {
                    epoch: parse_epoch(epoch)?,
                    seq: parse_u64(seq, "seq")?,
                })
            }
        });
    }
    Ok(logged)
}

fn parse_fetched(fields: Vec<String>) -> Result<Fetched, ClusterError> {
    if fields.len() < 2 || !(fields.len() - 2).is_multiple_of(4) {
        return Err(ClusterError::Protocol(format!(
            "fetch returned {} fields",
            fields.len()
        )));
    }
    let mut fields = fields.into_iter();
    let mut next = || fields.next().unwrap_or_default();
    let epoch = parse_epoch(&next())?;
    let head = parse_u64(&next(), "head")?;
    let mut entries = Vec::new();
    loop {
        let seq = next();
        if seq.is_empty() {
            break;
        }
        entries.push(LogEntry {
            seq: parse_u64(&seq, "seq")?,
            published_ms: parse_u64(&next(), "time")?,
            record: Record::plain(parse_event_type(&next()), next()),
        });
    }
    Ok(Fetched {
        epoch,
        head,
        entries,
    })
}

/// The broker's shared log (cluster mode) is this Redis.
impl SharedLog for Cluster {
    fn append(
        &self,
        channel: &ChannelName,
        submissions: Arc<[Submission]>,
        seen: Option<EventId>,
    ) -> BoxFuture<'static, Result<Vec<Logged>, LogError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move { Ok(cluster.publish(&channel, &submissions, seen).await?) })
    }

    fn fetch(
        &self,
        channel: &ChannelName,
        from: FetchFrom,
    ) -> BoxFuture<'static, Result<Fetched, LogError>> {
        let (cluster, channel) = (self.clone(), channel.clone());
        Box::pin(async move { Ok(Cluster::fetch(&cluster, &channel, from).await?) })
    }

    fn follow(&self, channel: &ChannelName) -> BoxFuture<'static, Result<(), LogError>> {
        let confirmed = self.bus().follow(channel);
        Box::pin(async move { Ok(confirmed.await?) })
    }

    fn unfollow(&self, channel: &ChannelName) {
        self.bus().unfollow(channel);
    }

    fn receiving(&self) -> bool {
        self.bus().is_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fetch answer's flat list becomes entries in order.
    #[test]
    fn parses_fetch_answer() {
        let fields: Vec<String> = [
            "1700000000000001",
            "7",
            "6",
            "10",
            "",
            "a\nb",
            "7",
            "11",
            "t",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let fetched = parse_fetched(fields).unwrap();
        assert_eq!(fetched.epoch.raw(), 1_700_000_000_000_001);
        assert_eq!(fetched.head, 7);
        assert_eq!(fetched.entries.len(), 2);
        assert_eq!(fetched.entries[0].record.data, "a\nb");
        assert!(fetched.entries[0].record.event_type.is_none());
        assert_eq!(
            fetched.entries[1]
                .record
                .event_type
                .as_ref()
                .unwrap()
                .as_str(),
            "t"
        );
        assert!(parse_fetched(vec!["1".into()]).is_err());
    }

    /// The publish answer numbers the stored events in order around repeats and refusals.
    #[test]
    fn parses_publish_answer() {
        let fields = |list: &[&str]| {
            list.iter()
                .map(|s| redis::Value::BulkString(s.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        };
        let id = |epoch, seq| EventId {
            epoch: Epoch::from_raw(epoch),
            seq,
        };
        let logged = parse_logged(fields(&["9", "4", "", "r 8 2", "x", ""]), 4).unwrap();
        assert_eq!(
            logged,
            vec![
                Logged::New(id(9, 4)),
                Logged::Repeat(id(8, 2)),
                Logged::KeyReused,
                Logged::New(id(9, 5)),
            ]
        );
        let repeats_only = parse_logged(fields(&["", "0", "r 8 2"]), 1).unwrap();
        assert_eq!(repeats_only, vec![Logged::Repeat(id(8, 2))]);
        assert!(parse_logged(fields(&["9", "4", ""]), 2).is_err());
        assert!(parse_logged(fields(&["9", "4", "r 8"]), 1).is_err());
    }
}
