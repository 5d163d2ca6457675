//! Homestead's storage: metadata in PostgreSQL or embedded SQLite (sqlx), file contents in a blob store
//! (object_store: local filesystem, memory or S3), and the [`Store`] that keeps the two consistent.

pub mod blob_holds;
pub mod blob_transfer;
pub mod blobs;
pub mod content_type;
pub mod database;
pub mod entry_cache;
pub mod event_bus;
pub mod health;
pub mod import;
mod listing;
pub mod metadata;
pub mod path;
pub mod revocations;
pub mod small_blobs;
pub mod snapshot;
pub mod store;

pub use blobs::{BlobStore, BlobsError};
pub use event_bus::EventBus;
pub use health::Health;
pub use metadata::{Metadata, MetadataError};
pub use path::{DirPath, EntryPath, NormalizedPath, PathError, Scope};
pub use store::{Store, StoreError};
