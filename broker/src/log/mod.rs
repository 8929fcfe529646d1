//! The partition log: segment files of Kafka RecordBatch v2 batches, with indexes,
//! recovery and retention.
