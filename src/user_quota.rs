//! The admin API's `UserQuota` JSON (OPERATIONS.md §5.4): parsing a patch or a token's settings with the
//! reference's validation, merging it into a user's stored settings, and rendering the stored
//! (`overrides`) and resolved (`effective`) views.

use homestead_backends::NormalizedPath;
use homestead_backends::metadata::{Quota, UserLimits};
use homestead_config::{Bandwidth, DefaultQuotas};
use serde_json::{Map, Value, json};

const MIB: u64 = 1 << 20;
/// Largest storage quota stored, in MB; larger values are clamped to it.
const MAX_STORAGE_MB: u64 = 2_147_483_647;
/// Largest burst accepted.
const MAX_BURST: u64 = 2_147_483_647;
/// Longest accepted rendering of a bandwidth.
const MAX_RATE_CHARS: usize = 32;
const UNLIMITED: &str = "unlimited";

/// One field of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field<T> {
    /// Not in the JSON: keep the stored value.
    Keep,
    /// `null`: back to the server default (bursts: none; paths: unrestricted).
    Reset,
    /// `"unlimited"`.
    Unlimited,
    /// An explicit value.
    Value(T),
}

/// A parsed `UserQuota` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaPatch {
    storage_mb: Field<u64>,
    rate_read: Field<String>,
    rate_write: Field<String>,
    rate_read_burst: Field<u32>,
    rate_write_burst: Field<u32>,
    allowed_write_paths: Field<Vec<String>>,
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name)
}

fn storage(value: Option<&Value>) -> Result<Field<u64>, String> {
    match value {
        None => Ok(Field::Keep),
        Some(Value::Null) => Ok(Field::Reset),
        Some(Value::String(s)) if s == UNLIMITED => Ok(Field::Unlimited),
        Some(v) => v
            .as_u64()
            .map(|mb| Field::Value(mb.min(MAX_STORAGE_MB)))
            .ok_or_else(|| {
                format!(
                    "storage_quota_mb: expected \"unlimited\" or a non-negative integer, not {v}"
                )
            }),
    }
}

fn rate(name: &str, value: Option<&Value>) -> Result<Field<String>, String> {
    match value {
        None => Ok(Field::Keep),
        Some(Value::Null) => Ok(Field::Reset),
        Some(Value::String(s)) if s == UNLIMITED => Ok(Field::Unlimited),
        Some(Value::String(s)) => {
            let parsed = Bandwidth::try_from(s.clone()).map_err(|err| format!("{name}: {err}"))?;
            let canonical = String::from(parsed);
            if canonical.len() > MAX_RATE_CHARS {
                return Err(format!(
                    "{name}: `{s}` is longer than {MAX_RATE_CHARS} characters"
                ));
            }
            Ok(Field::Value(canonical))
        }
        Some(v) => Err(format!(
            "{name}: expected \"unlimited\" or a rate such as \"10mb/s\", not {v}"
        )),
    }
}

fn burst(name: &str, value: Option<&Value>) -> Result<Field<u32>, String> {
    match value {
        None => Ok(Field::Keep),
        Some(Value::Null) => Ok(Field::Reset),
        Some(v) => v
            .as_u64()
            .filter(|b| (1..=MAX_BURST).contains(b))
            .map(|b| Field::Value(b as u32))
            .ok_or_else(|| {
                format!("{name}: expected a positive integer up to {MAX_BURST}, not {v}")
            }),
    }
}

fn paths(value: Option<&Value>) -> Result<Field<Vec<String>>, String> {
    let list = match value {
        None => return Ok(Field::Keep),
        Some(Value::Null) => return Ok(Field::Reset),
        Some(Value::Array(list)) => list,
        Some(v) => {
            return Err(format!(
                "allowed_write_paths: expected an array of paths, not {v}"
            ));
        }
    };
    let mut paths: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Some(path) = item.as_str() else {
            return Err(format!("allowed_write_paths: expected a path, not {item}"));
        };
        if path == "/" {
            return Err(
                "allowed_write_paths: `/` would allow everything; omit the field instead".into(),
            );
        }
        let normalized = NormalizedPath::parse(path)
            .map_err(|err| format!("allowed_write_paths: `{path}`: {err}"))?;
        if normalized.as_str() != path {
            return Err(format!(
                "allowed_write_paths: `{path}` is not normalized (`{}`)",
                normalized.as_str()
            ));
        }
        if paths.iter().any(|p| p == path) {
            return Err(format!("allowed_write_paths: `{path}` is listed twice"));
        }
        paths.push(path.to_string());
    }
    Ok(Field::Value(paths))
}

impl QuotaPatch {
    /// Parses a `UserQuota` object; the error is the 422 message.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let Some(object) = value.as_object() else {
            return Err(format!("expected a JSON object, not {value}"));
        };
        const KNOWN: [&str; 6] = [
            "storage_quota_mb",
            "rate_read",
            "rate_write",
            "rate_read_burst",
            "rate_write_burst",
            "allowed_write_paths",
        ];
        if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{unknown}`, expected one of {}",
                KNOWN.join(", ")
            ));
        }
        Ok(Self {
            storage_mb: storage(field(object, "storage_quota_mb"))?,
            rate_read: rate("rate_read", field(object, "rate_read"))?,
            rate_write: rate("rate_write", field(object, "rate_write"))?,
            rate_read_burst: burst("rate_read_burst", field(object, "rate_read_burst"))?,
            rate_write_burst: burst("rate_write_burst", field(object, "rate_write_burst"))?,
            allowed_write_paths: paths(field(object, "allowed_write_paths"))?,
        })
    }

    /// Merges the patch into stored settings and checks the result (a burst needs an explicit rate).
    pub fn apply(
        &self,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<(Option<Quota>, UserLimits), String> {
        let quota = match self.storage_mb {
            Field::Keep => quota,
            Field::Reset => None,
            Field::Unlimited => Some(Quota::Unlimited),
            Field::Value(mb) => Some(Quota::Bytes(mb * MIB)),
        };
        let rate = |field: &Field<String>, current: &Option<String>| match field {
            Field::Keep => current.clone(),
            Field::Reset => None,
            Field::Unlimited => Some(UNLIMITED.to_string()),
            Field::Value(rate) => Some(rate.clone()),
        };
        let burst = |field: &Field<u32>, current: Option<u32>| match field {
            Field::Keep => current,
            Field::Reset | Field::Unlimited => None,
            Field::Value(b) => Some(*b),
        };
        let merged = UserLimits {
            rate_read: rate(&self.rate_read, &limits.rate_read),
            rate_write: rate(&self.rate_write, &limits.rate_write),
            rate_read_burst: burst(&self.rate_read_burst, limits.rate_read_burst),
            rate_write_burst: burst(&self.rate_write_burst, limits.rate_write_burst),
            allowed_write_paths: match &self.allowed_write_paths {
                Field::Keep => limits.allowed_write_paths.clone(),
                Field::Reset | Field::Unlimited => None,
                Field::Value(paths) => Some(paths.clone()),
            },
        };
        let explicit = |rate: &Option<String>| rate.as_deref().is_some_and(|r| r != UNLIMITED);
        if merged.rate_read_burst.is_some() && !explicit(&merged.rate_read) {
            return Err("rate_read_burst needs an explicit rate_read".into());
        }
        if merged.rate_write_burst.is_some() && !explicit(&merged.rate_write) {
            return Err("rate_write_burst needs an explicit rate_write".into());
        }
        Ok((quota, merged))
    }
}

fn quota_json(quota: Quota) -> Value {
    match quota {
        Quota::Unlimited => json!(UNLIMITED),
        Quota::Bytes(bytes) => json!(bytes / MIB),
    }
}

/// The stored settings, default fields omitted, in the reference's field order.
pub fn overrides(quota: Option<Quota>, limits: &UserLimits) -> Value {
    let mut object = Map::new();
    if let Some(quota) = quota {
        object.insert("storage_quota_mb".into(), quota_json(quota));
    }
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            object.insert(name.into(), value);
        }
    };
    put("rate_read", limits.rate_read.clone().map(Value::from));
    put("rate_write", limits.rate_write.clone().map(Value::from));
    put("rate_read_burst", limits.rate_read_burst.map(Value::from));
    put("rate_write_burst", limits.rate_write_burst.map(Value::from));
    put(
        "allowed_write_paths",
        limits.allowed_write_paths.clone().map(Value::from),
    );
    Value::Object(object)
}

/// The settings in force: each stored value, else the server default, else `"unlimited"`.
pub fn effective(
    quota: Option<Quota>,
    limits: &UserLimits,
    default_quota: Quota,
    defaults: &DefaultQuotas,
) -> Value {
    let mut object = Map::new();
    object.insert(
        "storage_quota_mb".into(),
        quota_json(quota.unwrap_or(default_quota)),
    );
    let rate = |own: &Option<String>, default: Option<Bandwidth>| {
        own.clone()
            .or_else(|| default.map(String::from))
            .unwrap_or_else(|| UNLIMITED.to_string())
    };
    object.insert(
        "rate_read".into(),
        rate(&limits.rate_read, defaults.rate_read).into(),
    );
    object.insert(
        "rate_write".into(),
        rate(&limits.rate_write, defaults.rate_write).into(),
    );
    let burst = |own: Option<u32>, own_rate: &Option<String>, default| {
        own.or(if own_rate.is_none() { default } else { None })
    };
    if let Some(b) = burst(
        limits.rate_read_burst,
        &limits.rate_read,
        defaults.rate_read_burst.map(|b| b.get()),
    ) {
        object.insert("rate_read_burst".into(), b.into());
    }
    if let Some(b) = burst(
        limits.rate_write_burst,
        &limits.rate_write,
        defaults.rate_write_burst.map(|b| b.get()),
    ) {
        object.insert("rate_write_burst".into(), b.into());
    }
    if let Some(paths) = &limits.allowed_write_paths {
        object.insert("allowed_write_paths".into(), paths.clone().into());
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> Result<QuotaPatch, String> {
        QuotaPatch::parse(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_fresh_user_on_a_default_server() {
        let limits = UserLimits::default();
        assert_eq!(overrides(None, &limits), json!({}));
        assert_eq!(
            effective(None, &limits, Quota::Unlimited, &DefaultQuotas::default()).to_string(),
            r#"{"storage_quota_mb":"unlimited","rate_read":"unlimited","rate_write":"unlimited"}"#
        );
    }

    #[test]
    fn patches_keep_reset_and_set() {
        let (quota, limits) = patch(r#"{"storage_quota_mb": 5, "rate_read": "10MB/s", "rate_read_burst": 20, "allowed_write_paths": ["/pub/app/"]}"#)
            .unwrap()
            .apply(None, &UserLimits::default())
            .unwrap();
        assert_eq!(quota, Some(Quota::Bytes(5 * MIB)));
        assert_eq!(
            overrides(quota, &limits).to_string(),
            r#"{"storage_quota_mb":5,"rate_read":"10mb/s","rate_read_burst":20,"allowed_write_paths":["/pub/app/"]}"#
        );
        // Absent keeps; null resets; "unlimited" is explicit.
        let (quota, limits) =
            patch(r#"{"storage_quota_mb": "unlimited", "allowed_write_paths": null}"#)
                .unwrap()
                .apply(quota, &limits)
                .unwrap();
        assert_eq!(
            overrides(quota, &limits).to_string(),
            r#"{"storage_quota_mb":"unlimited","rate_read":"10mb/s","rate_read_burst":20}"#
        );
        let (quota, limits) =
            patch(r#"{"storage_quota_mb": null, "rate_read": null, "rate_read_burst": null}"#)
                .unwrap()
                .apply(quota, &limits)
                .unwrap();
        assert_eq!(overrides(quota, &limits), json!({}));
        let huge = patch(r#"{"storage_quota_mb": 99999999999}"#)
            .unwrap()
            .apply(None, &limits)
            .unwrap();
        assert_eq!(huge.0, Some(Quota::Bytes(MAX_STORAGE_MB * MIB)));
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        for (json, expected) in [
            (r#"{"storage_quota_mb": -1}"#, "storage_quota_mb"),
            (r#"{"rate_read": "10r/s"}"#, "rate_read"),
            (r#"{"rate_write": 5}"#, "rate_write"),
            (r#"{"rate_read_burst": 0}"#, "rate_read_burst"),
            (r#"{"allowed_write_paths": ["/"]}"#, "allowed_write_paths"),
            (r#"{"allowed_write_paths": ["/pub/a", "/pub/a"]}"#, "twice"),
            (
                r#"{"allowed_write_paths": ["pub/a"]}"#,
                "allowed_write_paths",
            ),
            (r#"{"allowed_write_paths": ["/pub//a"]}"#, "normalized"),
            (r#"{"nope": 1}"#, "unknown field"),
            ("[]", "object"),
        ] {
            let err = patch(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let err = patch(r#"{"rate_write_burst": 3}"#)
            .unwrap()
            .apply(None, &UserLimits::default())
            .unwrap_err();
        assert!(err.contains("explicit rate_write"), "{err}");
    }

    #[test]
    fn effective_falls_back_to_the_server_defaults() {
        let defaults: DefaultQuotas =
            toml::from_str("rate_read = \"2mb/s\"\nrate_read_burst = 4").unwrap();
        let limits = UserLimits {
            rate_write: Some("1kb/s".into()),
            ..Default::default()
        };
        assert_eq!(
            effective(None, &limits, Quota::Bytes(3 * MIB), &defaults).to_string(),
            r#"{"storage_quota_mb":3,"rate_read":"2mb/s","rate_write":"1kb/s","rate_read_burst":4}"#
        );
    }
}
