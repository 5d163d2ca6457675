//! `HOMESTEAD_<SECTION>__<KEY>` environment overrides, e.g. `HOMESTEAD_GENERAL__DATABASE_URL` sets
//! `general.database_url`. A value that reads as TOML (`true`, `8080`, `["a:1"]`) is taken with that type;
//! anything else is a string.

use toml::{Table, Value};

/// Prefix of every environment variable Homestead reads.
pub const PREFIX: &str = "HOMESTEAD_";

/// Variables that name CLI flags rather than config keys.
pub const FLAG_VARS: [&str; 2] = ["HOMESTEAD_DATA_DIR", "HOMESTEAD_CONFIG"];

/// One override taken from the environment.
#[derive(Debug, Clone)]
pub(crate) struct EnvOverride {
    /// The variable's name, for error messages.
    pub var: String,
    /// The dotted key path it sets.
    pub key: String,
    raw: String,
    /// Whether the value is currently taken with the type TOML gives it (else as a plain string).
    pub typed: bool,
}

impl EnvOverride {
    /// Reads the overrides from `HOMESTEAD_*` variables; a variable that names no key is an error.
    pub fn collect(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<EnvOverride>, String> {
        let mut overrides = Vec::new();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(PREFIX) else {
                continue;
            };
            if FLAG_VARS.contains(&var.as_str()) {
                continue;
            }
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if parts.len() < 2 || parts.iter().any(String::is_empty) {
                return Err(format!(
                    "environment variable {var}: not a config key; use HOMESTEAD_<SECTION>__<KEY>, \
                     e.g. HOMESTEAD_GENERAL__DATABASE_URL"
                ));
            }
            overrides.push(EnvOverride {
                var,
                key: parts.join("."),
                raw,
                typed: true,
            });
        }
        Ok(overrides)
    }

    /// The value to merge into the configuration.
    fn value(&self) -> Value {
        if self.typed
            && let Ok(mut table) = format!("v = {}", self.raw).parse::<Table>()
            && let Some(value) = table.remove("v")
        {
            return value;
        }
        Value::String(self.raw.clone())
    }

    /// Sets the key in `table`, creating the sections on the way.
    pub fn apply(&self, table: &mut Table) -> Result<(), String> {
        let mut parts: Vec<&str> = self.key.split('.').collect();
        let last = parts.pop().expect("at least two parts");
        let mut current = table;
        for part in parts {
            let entry = current
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            current = entry.as_table_mut().ok_or_else(|| {
                format!(
                    "environment variable {}: `{part}` is not a section",
                    self.var
                )
            })?;
        }
        current.insert(last.to_string(), self.value());
        Ok(())
    }
}
