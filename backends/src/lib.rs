//! Homestead's storage: metadata in PostgreSQL or embedded SQLite (sqlx), file contents in a blob store
//! (object_store: local filesystem, memory or S3).

pub mod blobs;
pub mod metadata;

pub use blobs::{BlobStore, BlobsError};
pub use metadata::{MetadataDb, MetadataError};
