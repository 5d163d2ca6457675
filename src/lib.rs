//! Homestead, a Pubky homeserver: the command line, the wiring of listeners, layers, routes and
//! storage, and the PKARR tasks.

pub mod app;
pub mod auth_token;
pub mod authorization;
pub mod backup;
pub mod cli;
pub mod command_context;
pub mod console;
pub mod fd_limit;
#[cfg(test)]
mod fuzz;
pub mod grant_proof;
pub mod http_error;
pub mod import_reference;
pub mod listeners;
pub mod logging;
pub mod lookups;
pub mod metrics;
pub mod pkarr_record;
pub mod preconditions;
pub mod proxy_protocol;
pub mod request_span;
pub mod routes;
pub mod server_key;
pub mod session_cookie;
pub mod signup_token;
pub mod stack;
pub mod staging;
pub mod stream_slots;
pub mod telemetry;
pub mod transfer_progress;
pub mod user_archive;
pub mod user_quota;
pub mod user_republisher;
pub mod webdav;
