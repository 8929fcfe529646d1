//! The controller's durable storage on sled: the Raft log, vote and committed id
//! (`LogStore`), and the replicated state machine with its snapshot (`StateMachine`).
//!
//! ```text
//!  <dir>/  (a sled db of its own, never the broker's metadata db)
//!    tree "log"   index (u64 BE) -> Entry (JSON)
//!    tree "meta"  "vote" | "committed" | "purged"   -> JSON
//!    tree "sm"    "state" -> {last_applied, membership, ClusterState}
//!                 "snapshot" -> {meta, data}
//! ```
//!
//! Durability: `append`, `save_vote`, `truncate` and `purge` flush sled before they
//! return, and `append` calls openraft's flushed callback only after that flush, so an
//! entry that counts towards a quorum survives a crash. The state machine is written
//! together with its last-applied id in one key and is not flushed per apply: after a
//! crash openraft re-applies the committed entries above whatever last-applied made it
//! to disk, which yields the same state because `apply` is deterministic.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::TypeConfig;
use super::state::{Applied, ClusterState, CommandResult};
use crate::error::{BrokerError, Result};

type StorageResult<T> = std::result::Result<T, StorageError<u64>>;

/// Opens the controller's sled db, waiting briefly for a previous instance in this
/// process (a restart) to release its lock.
pub(crate) async fn open_db(dir: &Path) -> Result<sled::Db> {
    std::fs::create_dir_all(dir).map_err(|e| BrokerError::io(dir, e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let path = dir.to_owned();
        let opened = tokio::task::spawn_blocking(move || sled::open(path))
            .await
            .map_err(|e| BrokerError::Controller {
                reason: format!("opening the controller store panicked: {e}"),
            })?;
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(err)) if Instant::now() < deadline => {
                tracing::debug!(dir = %dir.display(), %err, "controller db busy; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => {
                return Err(BrokerError::Controller {
                    reason: format!(
                        "cannot open the controller store in {}: {err}; is another broker using this data_dir?",
                        dir.display()
                    ),
                });
            }
        }
    }
}

fn tree(db: &sled::Db, name: &str) -> Result<sled::Tree> {
    db.open_tree(name).map_err(|err| BrokerError::Controller {
        reason: format!("cannot open controller tree {name}: {err}"),
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    key: &str,
) -> std::result::Result<Option<T>, String> {
    match tree.get(key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
    }
}

fn io_err(e: impl ToString) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The Raft log, vote and committed id on sled.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            db: db.clone(),
            log: tree(db, "log")?,
            meta: tree(db, "meta")?,
        })
    }

    async fn flush(&self) -> std::result::Result<(), std::io::Error> {
        self.db.flush_async().await.map(|_| ()).map_err(io_err)
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> std::result::Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.meta.insert(key, bytes).map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId<u64>> =
            read_json(&self.meta, "purged").map_err(|e| StorageIOError::read_logs(&io_err(e)))?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_meta("vote", vote)
            .map_err(|e| StorageIOError::write_vote(&io_err(e)))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        Ok(read_json(&self.meta, "vote").map_err(|e| StorageIOError::read_vote(&io_err(e)))?)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        self.put_meta("committed", &committed)
            .map_err(|e| StorageIOError::write(&io_err(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        let committed: Option<Option<LogId<u64>>> =
            read_json(&self.meta, "committed").map_err(|e| StorageIOError::read(&io_err(e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Durable first, then tell openraft: the entry may now count towards a quorum.
        match self.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                let storage = StorageIOError::write_logs(&err);
                callback.log_io_completed(Err(err));
                Err(storage.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Record the purge point first: a crash in between leaves extra entries, never a hole.
        self.put_meta("purged", &log_id)
            .map_err(|e| StorageIOError::write_logs(&io_err(e)))?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

/// What the state machine persists, in one key, so state and last-applied never disagree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredState {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: ClusterState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The replicated `ClusterState`, persisted in sled and published on a watch channel
/// after every applied batch, so the broker reads metadata without asking Raft.
pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    current: StoredState,
    publish: watch::Sender<Arc<ClusterState>>,
}

impl StateMachine {
    /// Opens the state machine; the receiver starts at the last persisted state.
    pub(crate) fn open(db: &sled::Db) -> Result<(Self, watch::Receiver<Arc<ClusterState>>)> {
        let tree = tree(db, "sm")?;
        let current: StoredState = read_json(&tree, "state")
            .map_err(|reason| BrokerError::Controller {
                reason: format!("the controller state machine on disk is unreadable: {reason}"),
            })?
            .unwrap_or_default();
        let (publish, rx) = watch::channel(Arc::new(current.state.clone()));
        Ok((
            Self {
                db: db.clone(),
                tree,
                current,
                publish,
            },
            rx,
        ))
    }

    fn persist(&self) -> std::result::Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(&self.current).map_err(io_err)?;
        self.tree.insert("state", bytes).map_err(io_err)?;
        Ok(())
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for it.
pub struct SnapshotBuilder {
    db: sled::Db,
    tree: sled::Tree,
    copy: StoredState,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = serde_json::to_vec(&self.copy.state)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = match self.copy.last_applied {
            Some(id) => format!("{}-{}-{nanos}", id.leader_id.term, id.index),
            None => format!("0-0-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.copy.last_applied,
            last_membership: self.copy.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.tree
            .insert("snapshot", bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::debug!(snapshot = %meta.snapshot_id, "controller snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        Ok((self.current.last_applied, self.current.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.current.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => {
                    self.current.state.applied_index = index;
                    Ok(Applied::Done)
                }
                EntryPayload::Normal(command) => {
                    let result = self.current.state.apply(&command, index);
                    if let Err(rejection) = &result {
                        tracing::debug!(index, %rejection, "controller command refused");
                    }
                    result
                }
                EntryPayload::Membership(membership) => {
                    self.current.state.applied_index = index;
                    self.current.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Applied::Done)
                }
            };
            results.push(result);
        }
        self.persist()
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.publish
            .send_replace(Arc::new(self.current.state.clone()));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            copy: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.current = StoredState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.tree
            .insert("snapshot", bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.persist()
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "controller installed snapshot");
        self.publish
            .send_replace(Arc::new(self.current.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = read_json(&self.tree, "snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, &io_err(e)))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
