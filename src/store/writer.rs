//! The store's one writer thread: it takes the appends of every channel,
//! commits them in groups (one fsync'd transaction per batch) and answers
//! each append once its commit is on disk. It also enforces retention on
//! disk.
//!
//! Who talks to it: [`Store::append`](super::Store::append) and
//! [`Store::close`](super::Store::close), over a `std` channel. It answers on
//! the `oneshot` in each [`Append`]; the channel actor waiting on it fans the
//! event out only then, so no client ever sees an id a crash could reuse.
//!
//! Batches. With `sync = "always"` a batch is whatever arrived while the
//! previous commit ran (group commit: one fsync for all of them, no added
//! wait). With `sync = "interval"` the writer, after the first append of a
//! batch, collects for `sync_interval` more before committing: fewer fsyncs,
//! up to one interval more latency. A batch holds at most [`MAX_BATCH`]
//! appends.
//!
//! Retention on disk, in bounded steps so it never stalls publishing:
//! - by count, in the same transaction as the appends: rows beyond
//!   `history.max_events` of each channel written to are deleted, at most
//!   its appends plus [`TRIM_CATCH_UP`] rows per channel and batch;
//! - by age (and by count for channels nobody writes to), every
//!   [`SWEEP_INTERVAL`]: up to [`SWEEP_CHANNELS`] channels, round robin,
//!   and at most [`SWEEP_ROWS`] rows per sweep. A channel whose history is
//!   empty and whose newest event is older than `history.max_age` loses its
//!   row too, so the file does not grow with every channel name ever used
//!   (a client resuming there gets an `unknown-epoch` gap, as in memory).
//!
//! - idempotency keys, in time order: those whose window ended are deleted
//!   with every commit (at most its keyed appends plus [`TRIM_CATCH_UP`])
//!   and by the sweep (at most [`SWEEP_ROWS`]), so the table holds about
//!   one window of keyed publishes.
//!
//! redb reuses the pages freed by deletions, so the file stops growing once
//! retention deletes as much as publishing adds.

use std::{
    collections::HashMap,
    ops::Bound,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use log::{error, info};
use metrics::Gauge;
use redb::{Database, ReadableTable, Table};
use tokio::sync::oneshot;

use super::{CHANNELS, EVENTS, IDEMPOTENCY, REFERENCE, Reference, StoreError};
use crate::{
    broker::{
        EventId,
        event::now_ms,
        idempotency::Idempotency,
        log::{LogError, Record},
    },
    config::{HistorySettings, SyncPolicy},
    metrics::Metrics,
    names::{ChannelName, EventType},
};

/// Most appends in one commit: bounds a transaction's size and how long the
/// first append of a huge batch waits for the last.
pub const MAX_BATCH: usize = 4096;
/// Rows beyond `max_events` deleted per channel and batch on top of one per
/// append, so a backlog (e.g. after lowering `max_events`) shrinks steadily.
pub const TRIM_CATCH_UP: usize = 64;
/// How often the age sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Channels one sweep looks at.
pub const SWEEP_CHANNELS: usize = 1024;
/// Rows one sweep deletes at most.
pub const SWEEP_ROWS: usize = 4096;

/// An event on its way to disk.
pub struct Append {
    pub channel: ChannelName,
    pub id: EventId,
    /// Milliseconds since 1970: age retention after a restart counts from here.
    pub published_ms: u64,
    pub record: Record,
    /// The publisher's idempotency key, kept in the same commit.
    pub idempotency: Option<Idempotency>,
    /// Answered once the commit holding the event is on disk, or failed.
    pub done: oneshot::Sender<Result<(), LogError>>,
}

pub enum Command {
    Append(Append),
    /// Commit what is queued, then stop.
    Close(oneshot::Sender<()>),
}

type Events<'t> = Table<'t, (&'static str, u64), (u64, &'static str, &'static str)>;
type Keys<'t> = Table<'t, (u64, &'static str, &'static str), (u64, u64, &'static [u8])>;

pub struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    sync: SyncPolicy,
    sync_interval: Duration,
    max_events: u64,
    max_age: Duration,
    /// How long an idempotency key is kept (`publish.idempotency_window`).
    idempotency_window: Duration,
    /// Shared with the [`Store`](super::Store): set when a commit failed.
    failed: Arc<AtomicBool>,
    /// Event rows in the file, kept up to date from what each commit did.
    rows: u64,
    rows_gauge: Gauge,
    bytes_gauge: Gauge,
    /// The last channel the previous sweep looked at; `None` starts over.
    sweep_cursor: Option<String>,
    next_sweep: Instant,
}

impl Writer {
    pub fn new(
        db: Arc<Database>,
        path: PathBuf,
        settings: &HistorySettings,
        idempotency_window: Duration,
        failed: Arc<AtomicBool>,
        metrics: &Metrics,
        rows: u64,
    ) -> Self {
        Self {
            db,
            path,
            sync: settings.sync,
            sync_interval: settings.sync_interval,
            max_events: settings.max_events as u64,
            max_age: settings.max_age,
            idempotency_window,
            failed,
            rows,
            rows_gauge: metrics.store_events.clone(),
            bytes_gauge: metrics.store_bytes.clone(),
            sweep_cursor: None,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
        }
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            let wait = self.next_sweep.saturating_duration_since(Instant::now());
            let first = match commands.recv_timeout(wait) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.sweep();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut close = None;
            take(first, &mut batch, &mut close);
            let deadline = match self.sync {
                SyncPolicy::Always => Instant::now(),
                SyncPolicy::Interval => Instant::now() + self.sync_interval,
            };
            while close.is_none() && batch.len() < MAX_BATCH {
                let next = match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => commands.recv_timeout(left).ok(),
                    _ => commands.try_recv().ok(),
                };
                match next {
                    Some(command) => take(command, &mut batch, &mut close),
                    None => break,
                }
            }
            self.commit(batch);
            if let Some(closed) = close {
                info!("history store closed path={}", self.path.display());
                let _ = closed.send(());
                return;
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
            }
        }
    }

    /// Writes a batch in one transaction and answers every append.
    fn commit(&mut self, batch: Vec<Append>) {
        if batch.is_empty() {
            return;
        }
        let outcome = match self.failed.load(Ordering::Acquire) {
            true => {
                Err("an earlier commit failed; restart the broker once the disk is fixed".into())
            }
            false => self.write(&batch),
        };
        match outcome {
            Ok(()) => {
                for append in batch {
                    let _ = append.done.send(Ok(()));
                }
            }
            Err(reason) => {
                if !self.failed.swap(true, Ordering::AcqRel) {
                    error!(
                        "history store commit failed path={} events={} reason={reason} \
                         (publishes answer 503 until the broker is restarted)",
                        self.path.display(),
                        batch.len()
                    );
                }
                for append in batch {
                    let failed = StoreError::Failed {
                        path: self.path.clone(),
                        reason: reason.clone(),
                    };
                    let _ = append.done.send(Err(LogError(failed.to_string())));
                }
            }
        }
    }

    fn write(&mut self, batch: &[Append]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        let (mut added, mut removed, mut keyed) = (0u64, 0u64, 0usize);
        {
            let mut events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut channels = txn.open_table(CHANNELS).map_err(|e| e.to_string())?;
            let mut keys = txn.open_table(IDEMPOTENCY).map_err(|e| e.to_string())?;
            // Per channel: epoch, head, its time, appends in this batch.
            let mut touched: HashMap<&str, (u64, u64, u64, usize)> = HashMap::new();
            for append in batch {
                let name = append.channel.as_str();
                let epoch = append.id.epoch.raw();
                if !touched.contains_key(name) {
                    let stored = channels
                        .get(name)
                        .map_err(|e| e.to_string())?
                        .map(|row| row.value().0);
                    if stored.is_some_and(|stored| stored != epoch) {
                        // A new life of the channel: the old one's rows go.
                        removed += remove_range(&mut events, name, u64::MAX, usize::MAX)?;
                    }
                }
                let record = &append.record;
                // A bridged copy: only a reference to its original.
                let reference = record.origin.as_deref().map(Reference::text);
                let (event_type, data) = match &reference {
                    Some(text) => (REFERENCE, text.as_str()),
                    None => (
                        record.event_type.as_ref().map_or("", EventType::as_str),
                        record.data.as_str(),
                    ),
                };
                let replaced = events
                    .insert(
                        (name, append.id.seq),
                        (append.published_ms, event_type, data),
                    )
                    .map_err(|e| e.to_string())?
                    .is_some();
                if !replaced {
                    added += 1;
                }
                if let Some(idempotency) = &append.idempotency {
                    keys.insert(
                        (append.published_ms, name, idempotency.key.as_str()),
                        (
                            epoch,
                            append.id.seq,
                            idempotency.digest.as_bytes().as_slice(),
                        ),
                    )
                    .map_err(|e| e.to_string())?;
                    keyed += 1;
                }
                let entry = touched.entry(name).or_insert((epoch, 0, 0, 0));
                *entry = (epoch, append.id.seq, append.published_ms, entry.3 + 1);
            }
            for (name, (epoch, head, head_ms, appended)) in touched {
                channels
                    .insert(name, (epoch, head, head_ms))
                    .map_err(|e| e.to_string())?;
                let beyond = head.saturating_sub(self.max_events);
                if beyond > 0 {
                    removed += remove_range(&mut events, name, beyond, appended + TRIM_CATCH_UP)?;
                }
            }
            if keyed > 0 {
                self.expire_keys(&mut keys, keyed + TRIM_CATCH_UP)?;
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
        self.rows = (self.rows + added).saturating_sub(removed);
        self.rows_gauge.set(self.rows as f64);
        Ok(())
    }

    /// Age retention, and count retention for channels nobody writes to.
    fn sweep(&mut self) {
        self.next_sweep = Instant::now() + SWEEP_INTERVAL;
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        match self.sweep_once() {
            Ok(0) => {}
            Ok(removed) => {
                self.rows = self.rows.saturating_sub(removed);
                self.rows_gauge.set(self.rows as f64);
            }
            Err(reason) => {
                // Like a failed append: nothing more is acknowledged.
                self.failed.store(true, Ordering::Release);
                error!(
                    "history store sweep failed path={} reason={reason}",
                    self.path.display()
                );
            }
        }
        if let Ok(meta) = std::fs::metadata(&self.path) {
            self.bytes_gauge.set(meta.len() as f64);
        }
    }

    /// Deletes idempotency keys whose window ended, oldest first, at most
    /// `budget`; returns how many.
    fn expire_keys(&self, keys: &mut Keys<'_>, budget: usize) -> Result<usize, String> {
        let ended = now_ms().saturating_sub(self.idempotency_window.as_millis() as u64);
        let mut expired = Vec::new();
        for row in keys
            .range(..(ended, "", ""))
            .map_err(|e| e.to_string())?
            .take(budget)
        {
            let (key, _) = row.map_err(|e| e.to_string())?;
            let (published_ms, channel, key) = key.value();
            expired.push((published_ms, channel.to_owned(), key.to_owned()));
        }
        for (published_ms, channel, key) in &expired {
            keys.remove((*published_ms, channel.as_str(), key.as_str()))
                .map_err(|e| e.to_string())?;
        }
        Ok(expired.len())
    }

    /// One bounded sweep; returns the event rows it deleted.
    fn sweep_once(&mut self) -> Result<u64, String> {
        let too_old = now_ms().saturating_sub(self.max_age.as_millis() as u64);
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        let (mut removed, mut forgotten) = (0u64, 0usize);
        let keys_expired;
        {
            let mut keys = txn.open_table(IDEMPOTENCY).map_err(|e| e.to_string())?;
            keys_expired = self.expire_keys(&mut keys, SWEEP_ROWS)?;
            let mut events = txn.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut channels = txn.open_table(CHANNELS).map_err(|e| e.to_string())?;
            let from = match &self.sweep_cursor {
                Some(last) => Bound::Excluded(last.as_str()),
                None => Bound::Unbounded,
            };
            let mut names = Vec::new();
            for row in channels
                .range::<&str>((from, Bound::Unbounded))
                .map_err(|e| e.to_string())?
                .take(SWEEP_CHANNELS)
            {
                let (name, value) = row.map_err(|e| e.to_string())?;
                names.push((name.value().to_owned(), value.value()));
            }
            self.sweep_cursor = match names.len() < SWEEP_CHANNELS {
                true => None,
                false => names.last().map(|(name, _)| name.clone()),
            };
            let mut budget = SWEEP_ROWS;
            for (name, (_, head, head_ms)) in &names {
                if budget == 0 {
                    // Go on from here next time.
                    self.sweep_cursor = Some(name.clone());
                    break;
                }
                let beyond = head.saturating_sub(self.max_events);
                let n = remove_range(&mut events, name, beyond, budget)?;
                budget -= n as usize;
                let n2 = remove_older(&mut events, name, too_old, budget)?;
                budget -= n2 as usize;
                removed += n + n2;
                let empty = events
                    .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
                    .map_err(|e| e.to_string())?
                    .next()
                    .is_none();
                if empty && *head_ms < too_old {
                    channels.remove(name.as_str()).map_err(|e| e.to_string())?;
                    forgotten += 1;
                }
            }
        }
        if removed == 0 && forgotten == 0 && keys_expired == 0 {
            txn.abort().map_err(|e| e.to_string())?;
        } else {
            txn.commit().map_err(|e| e.to_string())?;
            if removed > 0 || forgotten > 0 {
                info!(
                    "history store swept events_removed={removed} channels_forgotten={forgotten}"
                );
            }
        }
        Ok(removed)
    }
}

fn take(command: Command, batch: &mut Vec<Append>, close: &mut Option<oneshot::Sender<()>>) {
    match command {
        Command::Append(append) => batch.push(append),
        Command::Close(done) => *close = Some(done),
    }
}

/// Deletes `channel`'s rows with seq up to `upto`, oldest first, at most
/// `budget` of them; returns how many.
fn remove_range(
    events: &mut Events<'_>,
    channel: &str,
    upto: u64,
    budget: usize,
) -> Result<u64, String> {
    if upto == 0 || budget == 0 {
        return Ok(0);
    }
    let seqs = events
        .range((channel, 0)..=(channel, upto))
        .map_err(|e| e.to_string())?
        .take(budget)
        .map(|row| row.map(|(key, _)| key.value().1))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| e.to_string())?;
    for seq in &seqs {
        events.remove((channel, *seq)).map_err(|e| e.to_string())?;
    }
    Ok(seqs.len() as u64)
}

/// Deletes `channel`'s oldest rows published before `too_old` (ms since
/// 1970), at most `budget`; returns how many.
fn remove_older(
    events: &mut Events<'_>,
    channel: &str,
    too_old: u64,
    budget: usize,
) -> Result<u64, String> {
    let mut seqs = Vec::new();
    for row in events
        .range((channel, 0)..=(channel, u64::MAX))
        .map_err(|e| e.to_string())?
        .take(budget)
    {
        let (key, value) = row.map_err(|e| e.to_string())?;
        if value.value().0 >= too_old {
            break;
        }
        seqs.push(key.value().1);
    }
    for seq in &seqs {
        events.remove((channel, *seq)).map_err(|e| e.to_string())?;
    }
    Ok(seqs.len() as u64)
}

/// Starts the writer thread; returns the way to it.
pub fn spawn(writer: Writer) -> std::io::Result<mpsc::Sender<Command>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("history-store".into())
        .spawn(move || writer.run(rx))?;
    Ok(tx)
}
