//! Homestead, a Pubky homeserver: the command line, the wiring of listeners, layers, routes and
//! storage, and the PKARR tasks.

pub mod app;
pub mod cli;
pub mod listeners;
pub mod logging;
pub mod pkarr_record;
pub mod routes;
pub mod server_key;
