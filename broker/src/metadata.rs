//! The broker's metadata on disk: topics with their configs, and committed group
//! offsets, in one sled database per broker.
//!
//! sled writes are durable only after `flush()`, so every mutation here flushes before it
//! returns: callers acknowledge a topic creation or an offset commit only once it would
//! survive a crash. The partition log never lives here (DEPENDENCIES.md).
//!
//! The data directory is claimed with a marker file (`meridian.json`) and an exclusive
//! lock (`.lock`): a directory with foreign content, or one held by a running broker, is
//! refused before anything in it is touched.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// Name of the marker file that makes a directory a Meridian data directory.
pub const MARKER_FILE: &str = "meridian.json";
const LOCK_FILE: &str = ".lock";
const FORMAT_VERSION: u32 = 1;

/// What the marker file records, so a data directory is never reused by another node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataDirMarker {
    /// On-disk format version.
    pub format: u32,
    /// `REGION/NAME` of the node that owns the directory.
    pub node: String,
}

/// A topic as the metadata store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Per-topic overrides, Kafka config names to values.
    pub configs: BTreeMap<String, String>,
}

/// A committed group offset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Free-form metadata from the committer.
    pub metadata: String,
}

/// The open metadata database of one broker, holding the data directory's lock.
pub struct MetadataStore {
    db: sled::Db,
    topics: sled::Tree,
    offsets: sled::Tree,
    _lock: File,
    dir: PathBuf,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn meta_err(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Metadata {
        reason: err.to_string(),
    }
}

impl MetadataStore {
    /// Claims `dir` for `node` (creating it if missing) and opens the database.
    ///
    /// Refuses a non-empty directory without a marker, a marker of another node, and a
    /// directory locked by a running broker.
    pub fn open(dir: &Path, node: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BrokerError::io(dir, e))?;
        let marker_path = dir.join(MARKER_FILE);
        if marker_path.exists() {
            let text = std::fs::read_to_string(&marker_path)
                .map_err(|e| BrokerError::io(&marker_path, e))?;
            let marker: DataDirMarker =
                serde_json::from_str(&text).map_err(|e| BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!("{} is unreadable: {e}", marker_path.display()),
                })?;
            if marker.node != node {
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!("it belongs to node {}, not {node}", marker.node),
                });
            }
            if marker.format != FORMAT_VERSION {
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!(
                        "its format version is {}, this build reads {FORMAT_VERSION}",
                        marker.format
                    ),
                });
            }
        } else {
            let mut entries = std::fs::read_dir(dir).map_err(|e| BrokerError::io(dir, e))?;
            if let Some(entry) = entries.next() {
                let entry = entry.map_err(|e| BrokerError::io(dir, e))?;
                return Err(BrokerError::NotADataDir {
                    path: dir.to_owned(),
                    reason: format!(
                        "it is not empty ({} is there) and has no {MARKER_FILE}",
                        entry.file_name().to_string_lossy()
                    ),
                });
            }
        }

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BrokerError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BrokerError::DataDirLocked {
                    path: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(BrokerError::io(&lock_path, e)),
        }

        if !marker_path.exists() {
            let marker = DataDirMarker {
                format: FORMAT_VERSION,
                node: node.to_owned(),
            };
            let text = serde_json::to_string_pretty(&marker).map_err(meta_err)?;
            write_durably(&marker_path, text.as_bytes())?;
        }

        let db_path = dir.join("meta");
        let db = sled::Config::new()
            .path(&db_path)
            .open()
            .map_err(meta_err)?;
        let topics = db.open_tree("topics").map_err(meta_err)?;
        let offsets = db.open_tree("offsets").map_err(meta_err)?;
        Ok(Self {
            db,
            topics,
            offsets,
            _lock: lock,
            dir: dir.to_owned(),
        })
    }

    /// The data directory this store claimed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Result<Vec<TopicRecord>> {
        self.topics
            .iter()
            .values()
            .map(|v| {
                let v = v.map_err(meta_err)?;
                serde_json::from_slice(&v).map_err(meta_err)
            })
            .collect()
    }

    /// Records a topic durably.
    pub fn put_topic(&self, topic: &TopicRecord) -> Result<()> {
        let value = serde_json::to_vec(topic).map_err(meta_err)?;
        self.topics
            .insert(topic.name.as_bytes(), value)
            .map_err(meta_err)?;
        self.flush()
    }

    /// Removes a topic and every group offset committed on it, durably.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.topics.remove(name.as_bytes()).map_err(meta_err)?;
        let mut doomed = Vec::new();
        for entry in self.offsets.iter() {
            let (key, _) = entry.map_err(meta_err)?;
            if split_offset_key(&key).is_some_and(|(_, topic, _)| topic == name) {
                doomed.push(key);
            }
        }
        for key in doomed {
            self.offsets.remove(key).map_err(meta_err)?;
        }
        self.flush()
    }

    /// Stores a group's committed offsets durably (all or nothing).
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (topic, partition, committed) in offsets {
            let value = serde_json::to_vec(committed).map_err(meta_err)?;
            batch.insert(offset_key(group, topic, *partition), value);
        }
        self.offsets.apply_batch(batch).map_err(meta_err)?;
        self.flush()
    }

    /// A group's committed offsets, optionally limited to some topics.
    pub fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<(String, i32, CommittedOffset)>> {
        let mut prefix = group.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.offsets.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(meta_err)?;
            let Some((_, topic, partition)) = split_offset_key(&key) else {
                continue;
            };
            if !topics.is_empty() && !topics.iter().any(|t| t == topic) {
                continue;
            }
            let committed: CommittedOffset = serde_json::from_slice(&value).map_err(meta_err)?;
            out.push((topic.to_owned(), partition, committed));
        }
        Ok(out)
    }

    /// Every group that has committed offsets.
    pub fn groups(&self) -> Result<Vec<String>> {
        let mut groups: Vec<String> = Vec::new();
        for entry in self.offsets.iter() {
            let (key, _) = entry.map_err(meta_err)?;
            if let Some((group, _, _)) = split_offset_key(&key)
                && groups.last().map(String::as_str) != Some(group)
            {
                groups.push(group.to_owned());
            }
        }
        Ok(groups)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(meta_err)?;
        Ok(())
    }
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + topic.len() + 6);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn split_offset_key(key: &[u8]) -> Option<(&str, &str, i32)> {
    let (partition, rest) = key.split_last_chunk::<4>().map(|(rest, p)| (p, rest))?;
    let rest = rest.strip_suffix(&[0])?;
    let split = rest.iter().position(|b| *b == 0)?;
    let group = std::str::from_utf8(&rest[..split]).ok()?;
    let topic = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((group, topic, i32::from_be_bytes(*partition)))
}

/// Writes a small file so that it is either absent or complete after a crash.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| BrokerError::io(&tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| BrokerError::io(&tmp, e))?;
    file.sync_all().map_err(|e| BrokerError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BrokerError::io(path, e))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| BrokerError::io(parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_that_is_not_meridians() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("photos.jpg"), b"x").unwrap();
        let err = MetadataStore::open(dir.path(), "r/b1").unwrap_err();
        assert!(matches!(err, BrokerError::NotADataDir { .. }), "{err}");
        assert!(err.to_string().contains("photos.jpg"), "{err}");
    }

    #[test]
    fn refuses_a_directory_locked_by_a_running_broker() {
        let dir = tempfile::tempdir().unwrap();
        let _held = MetadataStore::open(dir.path(), "r/b1").unwrap();
        let err = MetadataStore::open(dir.path(), "r/b1").unwrap_err();
        assert!(matches!(err, BrokerError::DataDirLocked { .. }), "{err}");
    }

    #[test]
    fn refuses_a_directory_of_another_node() {
        let dir = tempfile::tempdir().unwrap();
        drop(MetadataStore::open(dir.path(), "r/b1").unwrap());
        let err = MetadataStore::open(dir.path(), "r/b2").unwrap_err();
        assert!(err.to_string().contains("belongs to node r/b1"), "{err}");
    }

    #[test]
    fn topics_and_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetadataStore::open(dir.path(), "r/b1").unwrap();
            store
                .put_topic(&TopicRecord {
                    name: "orders".into(),
                    partitions: 3,
                    replication_factor: 1,
                    configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                })
                .unwrap();
            let c = |o| CommittedOffset {
                offset: o,
                metadata: String::new(),
            };
            store
                .commit_offsets(
                    "g1",
                    &[("orders".into(), 0, c(5)), ("orders".into(), 2, c(7))],
                )
                .unwrap();
            store
                .commit_offsets("g2", &[("other".into(), 1, c(1))])
                .unwrap();
        }
        let store = MetadataStore::open(dir.path(), "r/b1").unwrap();
        assert_eq!(store.topics().unwrap()[0].partitions, 3);
        let offsets = store.fetch_offsets("g1", &[]).unwrap();
        let got: Vec<_> = offsets
            .iter()
            .map(|(t, p, c)| (t.as_str(), *p, c.offset))
            .collect();
        assert_eq!(got, vec![("orders", 0, 5), ("orders", 2, 7)]);
        assert_eq!(
            store.groups().unwrap(),
            vec!["g1".to_owned(), "g2".to_owned()]
        );
        store.delete_topic("orders").unwrap();
        assert!(store.fetch_offsets("g1", &[]).unwrap().is_empty());
        assert_eq!(store.fetch_offsets("g2", &[]).unwrap().len(), 1);
    }
}
