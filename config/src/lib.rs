//! Homestead's configuration: `<data-dir>/config.toml` in the reference homeserver's format (same keys,
//! meanings and defaults, plus keys of our own), overridden by `HOMESTEAD_<SECTION>__<KEY>` environment
//! variables. Unknown keys and invalid values are errors that name the key, the value and what is allowed.
//!
//! ```
//! let loaded = homestead_config::Config::from_sources(
//!     Some("[general]\nsignup_mode = \"open\"\n"),
//!     "config.toml",
//!     [("HOMESTEAD_ADMIN__ENABLED".to_string(), "false".to_string())],
//! )
//! .unwrap();
//! assert!(!loaded.config.admin.enabled);
//! ```

mod client_identity;
mod data_dir;
mod env;
mod sections;
mod values;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Table;

pub use client_identity::ClientIdentity;
pub use data_dir::{DataDir, default_data_dir};
pub use env::{FLAG_VARS, PREFIX as ENV_PREFIX};
pub use sections::{
    Admin, DefaultQuotas, Drive, General, LogFormat, Logging, Metrics, Otlp, Pkdns, RateLimit,
    Storage,
};
pub use values::{
    Bandwidth, DatabaseKind, DatabaseUrl, HostPort, Hostname, IpRange, LimitKey, LogLevel, Method,
    ModuleLevel, PathGlob, Per, RelayUrl, RequestQuota, SignupMode, StorageType, redact_url,
};

use env::EnvOverride;

/// The documented sample, every line of which is written commented out on first start.
pub const SAMPLE: &str = include_str!("../../deploy/config.sample.toml");

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[general]`
    pub general: General,
    /// `[drive]`
    pub drive: Drive,
    /// `[default_quotas]`
    pub default_quotas: DefaultQuotas,
    /// `[storage]`
    pub storage: Storage,
    /// `[admin]`
    pub admin: Admin,
    /// `[metrics]`
    pub metrics: Metrics,
    /// `[pkdns]`
    pub pkdns: Pkdns,
    /// `[logging]`
    pub logging: Logging,
    /// `[otlp]` (Homestead)
    pub otlp: Otlp,
}

/// A configuration that passed validation, with the warnings an operator should see at start-up.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Settings that were adjusted or that Homestead accepts but does not act on yet.
    pub warnings: Vec<String>,
}

/// Why a configuration could not be loaded. Each message is one line naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read, or the sample could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin}: line {line}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key is unknown, has the wrong type or an invalid value, or cannot be combined with another.
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        /// The file or the environment variable that set the key.
        origin: String,
        /// The dotted key path.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An environment variable that starts with `HOMESTEAD_` but names no key.
    #[error("{0}")]
    Env(String),
}

impl Config {
    /// Reads `path`; when it does not exist and `write_sample` is set, first writes the commented sample
    /// there (so the server then runs on the defaults). Applies the process's `HOMESTEAD_*` variables.
    pub fn load(path: &Path, write_sample: bool) -> Result<Loaded, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        if write_sample && !path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // 0600: the file holds the admin password.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut file| file.write_all(first_start_file().as_bytes()))
                .map_err(io)?;
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_sources(Some(&text), &path.display().to_string(), std::env::vars())
    }

    /// Builds the configuration from a file's text (`None`: no file) and environment variables.
    pub fn from_sources(
        file_text: Option<&str>,
        file_name: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let file_table = match file_text {
            Some(text) => text
                .parse::<Table>()
                .map_err(|err| syntax_error(file_name, text, &err))?,
            None => Table::new(),
        };
        let mut overrides = EnvOverride::collect(vars).map_err(ConfigError::Env)?;
        let mut config = loop {
            let mut table = file_table.clone();
            for o in &overrides {
                o.apply(&mut table).map_err(ConfigError::Env)?;
            }
            match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table)) {
                Ok(config) => break config,
                Err(err) => {
                    let key = err.path().to_string();
                    // toml appends "in `key`" on a second line: the key is already in our message.
                    let message = err
                        .inner()
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let env = overrides.iter_mut().find(|o| key_matches(&key, &o.key));
                    match env {
                        // A value such as `1234` for a string key: take it as the string it was.
                        Some(o) if o.typed => o.typed = false,
                        Some(o) => return Err(invalid(&o.var, &key, message)),
                        None => return Err(invalid(file_name, &key, message)),
                    }
                }
            }
        };
        let origin_of = |key: &str| {
            overrides
                .iter()
                .find(|o| key_matches(key, &o.key))
                .map_or(file_name.to_string(), |o| o.var.clone())
        };
        let warnings = config.validate(&origin_of)?;
        Ok(Loaded { config, warnings })
    }

    /// Cross-key checks and adjustments that serde cannot express.
    fn validate(&mut self, origin_of: &dyn Fn(&str) -> String) -> Result<Vec<String>, ConfigError> {
        let fail = |key: &str, message: String| Err(invalid(&origin_of(key), key, message));
        let mut warnings = Vec::new();

        if self.storage.default_quota_mb.is_none() && self.general.user_storage_quota_mb > 0 {
            self.storage.default_quota_mb = Some(self.general.user_storage_quota_mb);
            warnings.push(
                "general.user_storage_quota_mb is deprecated: use storage.default_quota_mb".into(),
            );
        }

        let storage = &self.storage;
        match storage.kind {
            StorageType::GoogleBucket => {
                return fail(
                    "storage.type",
                    "\"google_bucket\" is a reference setting Homestead does not support; \
                     allowed: \"file_system\", \"in_memory\", \"s3\""
                        .into(),
                );
            }
            StorageType::S3 => match &storage.bucket_name {
                None => {
                    return fail(
                        "storage.bucket_name",
                        "required when storage.type = \"s3\"".into(),
                    );
                }
                Some(name) if !valid_bucket_name(name) => {
                    return fail(
                        "storage.bucket_name",
                        format!(
                            "`{name}` is not an S3 bucket name: 3 to 63 lower-case letters, digits, `.` and `-`"
                        ),
                    );
                }
                Some(_) => {}
            },
            StorageType::FileSystem | StorageType::InMemory => {
                let s3_keys = [
                    ("storage.bucket_name", storage.bucket_name.is_some()),
                    ("storage.s3_endpoint", storage.s3_endpoint.is_some()),
                    (
                        "storage.s3_access_key_id",
                        storage.s3_access_key_id.is_some(),
                    ),
                    (
                        "storage.s3_secret_access_key",
                        storage.s3_secret_access_key.is_some(),
                    ),
                ];
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return fail(key, "only used with storage.type = \"s3\"".into());
                }
            }
        }
        if storage.credential.is_some() {
            return fail(
                "storage.credential",
                "the reference's Google Cloud credential is not supported by Homestead".into(),
            );
        }
        if let Some(endpoint) = &storage.s3_endpoint {
            let ok =
                url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return fail(
                    "storage.s3_endpoint",
                    format!("`{endpoint}` is not an endpoint URL: expected http(s)://host[:port]"),
                );
            }
        }

        if let Some(endpoint) = &self.otlp.endpoint {
            let ok =
                url::Url::parse(endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return fail(
                    "otlp.endpoint",
                    format!("`{endpoint}` is not a collector URL: expected http(s)://host[:port]"),
                );
            }
        }

        if self.drive.max_header_bytes < 8192 {
            return fail(
                "drive.max_header_bytes",
                format!(
                    "{} is too small: at least 8192",
                    self.drive.max_header_bytes
                ),
            );
        }
        if self.drive.max_connections == 0 {
            return fail(
                "drive.max_connections",
                "0 would refuse every client: at least 1".into(),
            );
        }

        let admin = &self.admin;
        let length = admin.admin_password.chars().count();
        if admin.enabled && length < MIN_ADMIN_PASSWORD {
            let problem = if length == 0 {
                "not set".to_string()
            } else {
                format!("{length} characters are too few")
            };
            return fail(
                "admin.admin_password",
                format!(
                    "{problem}: the admin listener needs a password of at least \
                     {MIN_ADMIN_PASSWORD} characters (or admin.enabled = false)"
                ),
            );
        }

        let interval = self.pkdns.user_keys_republisher_interval;
        if interval != 0 && interval < 1800 {
            warnings.push(format!(
                "pkdns.user_keys_republisher_interval = {interval} is below the minimum: raised to 1800"
            ));
            self.pkdns.user_keys_republisher_interval = 1800;
        }

        Ok(warnings)
    }
}

/// The fewest characters an admin password may have.
pub const MIN_ADMIN_PASSWORD: usize = 12;

/// What first start writes: the commented sample, then an admin password of 128 random bits, so that no
/// server ever runs with a well-known one.
pub fn first_start_file() -> String {
    let password: String = (0..26)
        .map(|_| {
            const Z32: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
            char::from(Z32[rand::random_range(0..Z32.len())])
        })
        .collect();
    format!(
        "{}\n# Written on first start: the password of the admin API (X-Admin-Password). Keep it secret.\n\
         [admin]\nadmin_password = \"{password}\"\n",
        commented_sample()
    )
}

/// The sample with every setting commented out.
pub fn commented_sample() -> String {
    SAMPLE
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                line.to_string()
            } else {
                format!("# {line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Whether the failing path (e.g. `drive.rate_limits[0].quota`) lies under an override's key.
fn key_matches(path: &str, key: &str) -> bool {
    path == key
        || path
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn invalid(origin: &str, key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        key: key.to_string(),
        message,
    }
}

fn syntax_error(origin: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let line = err.span().map_or(1, |span| {
        text[..span.start.min(text.len())].lines().count().max(1)
    });
    ConfigError::Syntax {
        origin: origin.to_string(),
        line,
        message: err.message().replace('\n', " "),
    }
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests;
