//! Client-side records: building and decoding RecordBatch v2 bytes, and choosing
//! partitions the way Kafka's default partitioner does.
