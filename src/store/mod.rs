//! Durable history: each channel's events, id sequence and epoch in one
//! embedded, crash-safe database file (`<data_dir>/history.redb`, a `redb`
//! copy-on-write B-tree with checksummed, fsync'd commits).
//!
//! Who talks to it: `startup` opens the [`Store`] (a damaged or unreadable
//! file stops the broker with an error naming it), hands it to the broker as
//! its [`DurableStore`] and closes it after the drain. A channel actor in
//! durable mode restores its channel from the store when it starts and hands
//! every publish to the writer (see `writer`), delivering the event only
//! once its commit is on disk; `/readyz` asks the store's [`ReadinessCheck`].
//!
//! Tables:
//! - `events`: `(channel, seq)` → `(published_at in ms since 1970, event type
//!   or "", data)`; a bridged copy (a record with an origin, e.g. a channel
//!   event on the Mercure hub's channel) is a reference instead, event type
//!   [`REFERENCE`] and data `"<epoch> <seq> <channel>"` of the original's
//!   row, so the event itself is written once; [`Store::load`] reads the
//!   original in its place;
//! - `channels`: `channel` → `(epoch, head seq, published_at of the head)`;
//! - `idempotency`: `(published_at in ms, channel, idempotency key)` →
//!   `(epoch, seq, request digest)`: the key a publish brought, written in
//!   its event's commit, so a restart still knows it
//!   (`crate::broker::idempotency`); ordered by time, so the rows whose
//!   `publish.idempotency_window` ended are the first ones, deleted with
//!   each commit and by the sweep, and the book reads the rest at start;
//! - `meta`: `"format"` → the layout version ([`FORMAT`]).
//!
//! Reads (a channel's restore) run on the caller's thread in their own read
//! transaction; every write goes through the one writer thread, which groups
//! them into commits and acknowledges each append once its commit is on disk.

mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Instant,
};

use futures_util::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

pub use writer::Append;

use crate::{
    broker::{
        EventId,
        event::{Epoch, now_ms},
        idempotency::{Idempotency, IdempotencyKey, RememberedKey, RequestDigest},
        log::{DurableStore, Fetched, LogEntry, LogError, Origin, Record},
    },
    config::{HistorySettings, PublishSettings},
    metrics::Metrics,
    names::{ChannelName, EventType},
    readiness::ReadinessCheck,
};

/// The database file inside `history.data_dir`.
pub const FILE_NAME: &str = "history.redb";

/// Version of the table layout; a file with another one is refused at start.
/// Layout 2 added reference rows ([`REFERENCE`]); a layout-1 file is a
/// layout-2 file without any, and is marked 2 when opened. The
/// `idempotency` table came later without a new layout: a file without it
/// gets it empty, and an older broker leaves it alone.
pub const FORMAT: u64 = 2;

/// The event type column of a reference row: no event type has a space.
const REFERENCE: &str = " copy-of";

/// The store's page cache. Live channels keep their history in memory, so
/// the cache mostly serves restores of channels coming back; redb's default
/// (1 GiB) would only make the process look bigger.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

type EventsTable = TableDefinition<'static, (&'static str, u64), (u64, &'static str, &'static str)>;
type IdempotencyTable =
    TableDefinition<'static, (u64, &'static str, &'static str), (u64, u64, &'static [u8])>;

const EVENTS: EventsTable = TableDefinition::new("events");
const IDEMPOTENCY: IdempotencyTable = TableDefinition::new("idempotency");
const CHANNELS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("channels");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Why the store cannot do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// At start: the folder or the file cannot be used. Says which and what
    /// to do.
    #[error("cannot open the history store {path}: {reason}. {advice}")]
    Open {
        path: PathBuf,
        reason: String,
        advice: &'static str,
    },
    /// A read or a commit failed while running.
    #[error("the history store {path} failed: {reason}")]
    Failed { path: PathBuf, reason: String },
    /// The writer has stopped (shutdown).
    #[error("the history store {0} no longer accepts writes")]
    Closed(PathBuf),
}

/// What to do about a file that does not open.
const ADVICE_DAMAGED: &str = "The file is damaged or is not a history store. Stop the broker, \
     move the file aside (the broker then starts with an empty history) or restore it from a \
     backup, then start again";
const ADVICE_IN_USE: &str = "Another sse-broker process is using this data directory: stop it, \
     or give this one another --data-dir";
const ADVICE_ACCESS: &str = "Check that the folder exists or can be created, and that this user \
     may read and write it and the file";

/// A handle on the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    /// To the writer thread.
    commands: mpsc::Sender<writer::Command>,
    /// Set by the writer when a commit failed: from then on it refuses
    /// every write (a publish answers 503) until the broker is restarted,
    /// so nothing is ever acknowledged that is not on disk.
    failed: Arc<AtomicBool>,
    max_events: usize,
    /// The idempotency keys read at open, for the broker's book (taken once).
    remembered: std::sync::Mutex<Vec<RememberedKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `<data_dir>/history.redb`, checks it can be read,
    /// reads the idempotency keys still in their window (`publish`) and
    /// starts the writer thread. Any problem is an [`StoreError::Open`]
    /// naming the file: never a silent empty history.
    pub fn open(
        settings: &HistorySettings,
        publish: &PublishSettings,
        metrics: &Metrics,
    ) -> Result<Self, StoreError> {
        let dir = &settings.data_dir;
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Open {
            path: dir.clone(),
            reason: err.to_string(),
            advice: ADVICE_ACCESS,
        })?;
        let path = dir.join(FILE_NAME);
        let started = Instant::now();
        let opened = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|err| open_error(&path, err))?;
        let damaged = |reason| StoreError::Open {
            path: path.clone(),
            reason,
            advice: ADVICE_DAMAGED,
        };
        let rows = prepare(&opened).map_err(damaged)?;
        let remembered = remembered_keys(&opened, publish).map_err(damaged)?;
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        ::log::info!(
            "history store opened path={} channels={} events={} bytes={bytes} ms={}",
            path.display(),
            rows.channels,
            rows.events,
            started.elapsed().as_millis()
        );
        metrics.store_events.set(rows.events as f64);
        metrics.store_bytes.set(bytes as f64);
        let db = Arc::new(opened);
        let failed = Arc::new(AtomicBool::new(false));
        let commands = writer::spawn(writer::Writer::new(
            Arc::clone(&db),
            path.clone(),
            settings,
            publish.idempotency_window,
            Arc::clone(&failed),
            metrics,
            rows.events,
        ))
        .map_err(|err| StoreError::Open {
            path: path.clone(),
            reason: format!("cannot start the writer thread: {err}"),
            advice: ADVICE_ACCESS,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                commands,
                failed,
                max_events: settings.max_events,
                remembered: std::sync::Mutex::new(remembered),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads `channel` as it was last committed: `None` when the store does
    /// not know it (a new channel, or one whose history expired). Blocks the
    /// caller for one read transaction. The retained events come back oldest
    /// first, contiguous up to the head.
    pub fn load(&self, channel: &ChannelName) -> Result<Option<Fetched>, StoreError> {
        let failed = |reason: String| StoreError::Failed {
            path: self.inner.path.clone(),
            reason,
        };
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| failed(e.to_string()))?;
        let channels = txn
            .open_table(CHANNELS)
            .map_err(|e| failed(e.to_string()))?;
        let Some((epoch, head, _)) = channels
            .get(channel.as_str())
            .map_err(|e| failed(e.to_string()))?
            .map(|row| row.value())
        else {
            return Ok(None);
        };
        let events_table = txn.open_table(EVENTS).map_err(|e| failed(e.to_string()))?;
        // Only the newest `max_events` can be retained, whatever the disk
        // still holds (e.g. after max_events was lowered).
        let first = (head + 1)
            .saturating_sub(self.inner.max_events as u64)
            .max(1);
        let mut entries: Vec<LogEntry> = Vec::new();
        let rows = events_table
            .range((channel.as_str(), first)..=(channel.as_str(), head))
            .map_err(|e| failed(e.to_string()))?;
        for row in rows {
            let (key, value) = row.map_err(|e| failed(e.to_string()))?;
            let seq = key.value().1;
            let (published_ms, event_type, data) = value.value();
            let record = match event_type {
                REFERENCE => {
                    let original = Reference::parse(data)
                        .ok_or_else(|| {
                            failed(format!(
                                "channel {channel} seq {seq}: bad reference {data:?}"
                            ))
                        })?
                        .read(&channels, &events_table)
                        .map_err(|e| failed(e.to_string()))?;
                    // A copy whose original is gone (its channel trimmed or
                    // restarted it) leaves a hole: handled as one below.
                    let Some(original) = original else {
                        continue;
                    };
                    original
                }
                _ => Record::plain(
                    parse_event_type(event_type).map_err(|why| {
                        failed(format!(
                            "channel {channel} seq {seq}: stored event type {why}"
                        ))
                    })?,
                    data.to_owned(),
                ),
            };
            entries.push(LogEntry {
                seq,
                published_ms,
                record,
            });
        }
        // Retained seqs are contiguous; keep the newest contiguous run.
        let mut start = 0;
        for i in 1..entries.len() {
            if entries[i].seq != entries[i - 1].seq + 1 {
                start = i;
            }
        }
        if start > 0 {
            ::log::warn!(
                "history store hole channel={channel} path={} kept_from_seq={}",
                self.inner.path.display(),
                entries[start].seq
            );
            entries.drain(..start);
        }
        if entries.last().is_some_and(|e| e.seq != head) {
            entries.clear();
        }
        Ok(Some(Fetched {
            epoch: Epoch::from_raw(epoch),
            head,
            entries,
        }))
    }

    /// Hands an event to the writer; `append.done` answers once its commit
    /// is on disk (or failed).
    pub fn append(&self, append: Append) {
        if self.inner.failed.load(Ordering::Acquire) {
            let _ = append
                .done
                .send(Err(LogError(self.failed_error().to_string())));
            return;
        }
        if let Err(mpsc::SendError(writer::Command::Append(append))) =
            self.inner.commands.send(writer::Command::Append(append))
        {
            let closed = StoreError::Closed(self.inner.path.clone());
            let _ = append.done.send(Err(LogError(closed.to_string())));
        }
    }

    fn failed_error(&self) -> StoreError {
        StoreError::Failed {
            path: self.inner.path.clone(),
            reason: "an earlier commit failed; restart the broker once the disk is fixed".into(),
        }
    }

    /// Commits what the writer holds, then stops it. Publishes after this
    /// are refused.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self
            .inner
            .commands
            .send(writer::Command::Close(done))
            .is_ok()
        {
            let _ = closed.await;
        }
    }
}

/// The stored event type column: empty for none.
fn parse_event_type(text: &str) -> Result<Option<EventType>, String> {
    match text {
        "" => Ok(None),
        name => EventType::parse(name).map(Some),
    }
}

/// What a reference row points at: the original event's row.
struct Reference<'a> {
    epoch: u64,
    seq: u64,
    channel: &'a str,
}

impl<'a> Reference<'a> {
    /// The data column of a reference to `origin`.
    fn text(origin: &Origin) -> String {
        format!(
            "{} {} {}",
            origin.id.epoch.raw(),
            origin.id.seq,
            origin.channel
        )
    }

    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(3, ' ');
        Some(Self {
            epoch: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            channel: parts.next()?,
        })
    }

    /// The original's record, with its origin set; `None` when its row is
    /// gone (trimmed, or the channel started a new life since).
    fn read(
        &self,
        channels: &impl ReadableTable<&'static str, (u64, u64, u64)>,
        events: &impl ReadableTable<(&'static str, u64), (u64, &'static str, &'static str)>,
    ) -> Result<Option<Record>, String> {
        let epoch = channels
            .get(self.channel)
            .map_err(|e| e.to_string())?
            .map(|row| row.value().0);
        if epoch != Some(self.epoch) {
            return Ok(None);
        }
        let Some(row) = events
            .get((self.channel, self.seq))
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let (_, event_type, data) = row.value();
        let (Ok(channel), Ok(event_type)) = (
            ChannelName::parse_recorded(self.channel),
            parse_event_type(event_type),
        ) else {
            return Ok(None);
        };
        let mut record = Record::plain(event_type, data.to_owned());
        record.origin = Some(Box::new(Origin {
            channel,
            id: EventId {
                epoch: Epoch::from_raw(self.epoch),
                seq: self.seq,
            },
        }));
        Ok(Some(record))
    }
}

/// Names the file and says what to do, by kind of failure.
fn open_error(path: &Path, err: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError as D, StorageError as S};
    let advice = match &err {
        D::DatabaseAlreadyOpen | D::LockProtocolMismatch => ADVICE_IN_USE,
        D::Storage(S::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::IsADirectory
            ) =>
        {
            ADVICE_ACCESS
        }
        _ => ADVICE_DAMAGED,
    };
    StoreError::Open {
        path: path.to_owned(),
        reason: err.to_string(),
        advice,
    }
}

/// What the file holds, counted at open.
struct Rows {
    channels: u64,
    events: u64,
}

/// Creates the tables of a new file, checks the layout version of an
/// existing one, and reads both tables once: a file that opens but cannot
/// be read fails here, at start, rather than when a channel comes back.
fn prepare(db: &Database) -> Result<Rows, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let format = meta
            .get("format")
            .map_err(|e| e.to_string())?
            .map(|v| v.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(|e| e.to_string())?;
            }
            Some(FORMAT) => {}
            Some(1) => {
                meta.insert("format", FORMAT).map_err(|e| e.to_string())?;
            }
            Some(other) => {
                return Err(format!(
                    "it has table layout {other}, this broker reads layout {FORMAT}"
                ));
            }
        }
        txn.open_table(EVENTS).map_err(|e| e.to_string())?;
        txn.open_table(CHANNELS).map_err(|e| e.to_string())?;
        txn.open_table(IDEMPOTENCY).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    let read = db.begin_read().map_err(|e| e.to_string())?;
    let channels = read.open_table(CHANNELS).map_err(|e| e.to_string())?;
    let events = read.open_table(EVENTS).map_err(|e| e.to_string())?;
    // Walk the channel table (small: one row per channel with history) so
    // a damaged page there is found now.
    for row in channels.iter().map_err(|e| e.to_string())? {
        row.map_err(|e| e.to_string())?;
    }
    Ok(Rows {
        channels: channels.len().map_err(|e| e.to_string())?,
        events: events.len().map_err(|e| e.to_string())?,
    })
}

/// The idempotency keys whose window has not ended, oldest first; at most
/// `publish.idempotency_max_keys`, the newest (the book holds no more).
fn remembered_keys(db: &Database, publish: &PublishSettings) -> Result<Vec<RememberedKey>, String> {
    let window = publish.idempotency_window.as_millis() as u64;
    let since = now_ms().saturating_sub(window);
    let read = db.begin_read().map_err(|e| e.to_string())?;
    let table = read.open_table(IDEMPOTENCY).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    let rows = table
        .range((since, "", "")..)
        .map_err(|e| e.to_string())?
        .rev()
        .take(publish.idempotency_max_keys);
    for row in rows {
        let (key, value) = row.map_err(|e| e.to_string())?;
        let (published_ms, channel, text) = key.value();
        let (epoch, seq, digest) = value.value();
        // Rows were written from checked values; one that no longer reads
        // as one is left out rather than failing the start.
        let (Ok(channel), Ok(key), Ok(digest)) = (
            ChannelName::parse_recorded(channel),
            IdempotencyKey::parse(text),
            <[u8; 16]>::try_from(digest),
        ) else {
            continue;
        };
        keys.push(RememberedKey {
            channel,
            idempotency: Idempotency {
                key,
                digest: RequestDigest::from_bytes(digest),
            },
            id: EventId {
                epoch: Epoch::from_raw(epoch),
                seq,
            },
            published_ms,
        });
    }
    keys.reverse();
    Ok(keys)
}

/// Channel and event rows in a store file that no broker has open (tests,
/// diagnostics).
pub fn row_counts(path: &Path) -> Result<(u64, u64), StoreError> {
    let failed = |reason: String| StoreError::Failed {
        path: path.to_owned(),
        reason,
    };
    let db = Database::open(path).map_err(|e| open_error(path, e))?;
    let txn = db.begin_read().map_err(|e| failed(e.to_string()))?;
    let channels = txn
        .open_table(CHANNELS)
        .map_err(|e| failed(e.to_string()))?;
    let events = txn.open_table(EVENTS).map_err(|e| failed(e.to_string()))?;
    Ok((
        channels.len().map_err(|e| failed(e.to_string()))?,
        events.len().map_err(|e| failed(e.to_string()))?,
    ))
}

/// The broker's durable history is this store.
impl DurableStore for Store {
    fn load(&self, channel: &ChannelName) -> Result<Option<Fetched>, LogError> {
        Store::load(self, channel).map_err(|err| LogError(err.to_string()))
    }

    fn append(
        &self,
        channel: &ChannelName,
        id: EventId,
        published_ms: u64,
        record: Record,
        idempotency: Option<Idempotency>,
    ) -> oneshot::Receiver<Result<(), LogError>> {
        let (done, answer) = oneshot::channel();
        Store::append(
            self,
            Append {
                channel: channel.clone(),
                id,
                published_ms,
                record,
                idempotency,
                done,
            },
        );
        answer
    }

    fn remembered(&self) -> Vec<RememberedKey> {
        let mut remembered = self
            .inner
            .remembered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *remembered)
    }
}

/// `/readyz`: the store takes writes (no commit has failed).
impl ReadinessCheck for Store {
    fn name(&self) -> &'static str {
        "history-store"
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let outcome = match self.inner.failed.load(Ordering::Acquire) {
            true => Err(self.failed_error().to_string()),
            false => Ok(()),
        };
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests;
