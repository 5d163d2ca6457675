//! `homestead export-user KEY > archive` (or `-o archive`) and `homestead import-user < archive`: one
//! user's files moved between homeservers as a single stream.
//!
//! The archive format (version 1), every line ending in `\n`:
//!
//! 1. the line `homestead-user-archive 1`;
//! 2. a header, one line of JSON: `{"user": "<z32 key>", "files": N, "bytes": B, "exported_at": µs}`;
//! 3. the manifest, N lines of JSON in strictly increasing byte order of `path`, one per file:
//!    `{"path": "/pub/...", "hash": "<BLAKE3, 64 hex>", "length": n, "content_type": "...",
//!    "created_at": µs, "modified_at": µs}` (`/priv/` files included);
//! 4. the bodies, in manifest order, each exactly `length` bytes, nothing between them (B in all);
//! 5. the trailer line `end <BLAKE3 hex of every byte before this line>`, and nothing after it.
//!
//! Export writes it from one read transaction (the manifest and the bodies show the same moment) under
//! a hold on the blob store, streaming each body from the store. Import checks everything before it
//! commits anything: the header and each manifest line, each body against its hash as it is staged
//! into fresh blobs, the trailer's hash over the whole archive and the end of input; only then does one
//! transaction sign the user up (if absent), insert the entries, append a `PUT` event per file (so
//! indexers following the target see the files) and set the usage. On any failure the staged blobs
//! are removed and nothing is imported. The manifest is held in memory (about 200 bytes a file); bodies
//! never are.

mod export;
mod format;
mod import;

pub use export::{export_user, export_user_to_file};
pub use import::import_user;
