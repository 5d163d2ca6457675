use super::*;

/// An admin password for the tests whose subject is something else (the default has none).
const PASSWORD: &str = "a-long-test-password";

fn load(text: &str) -> Result<Loaded, ConfigError> {
    load_env(text, &[("HOMESTEAD_ADMIN__ADMIN_PASSWORD", PASSWORD)])
}

fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_sources(Some(text), "config.toml", vars)
}

fn error(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn empty_file_gives_the_reference_defaults_except_the_embedded_database() {
    let loaded = load("").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(
        c,
        Config {
            admin: Admin {
                admin_password: PASSWORD.into(),
                ..Admin::default()
            },
            ..Config::default()
        }
    );
    assert_eq!(c.general.database_url, None);
    assert_eq!(c.general.signup_mode, SignupMode::TokenRequired);
    assert_eq!(c.drive.icann_listen_socket.to_string(), "127.0.0.1:6286");
    assert_eq!(c.drive.pubky_listen_socket.to_string(), "127.0.0.1:6287");
    assert_eq!(c.admin.listen_socket.to_string(), "127.0.0.1:6288");
    assert_eq!(c.metrics.listen_socket.to_string(), "127.0.0.1:6289");
    assert!(c.admin.enabled && !c.metrics.enabled);
    assert_eq!(c.drive.rate_limits.len(), 1);
    assert_eq!(c.drive.rate_limits[0].path.as_str(), "/signup_tokens/*");
    assert_eq!(c.pkdns.icann_domain.as_ref().unwrap().as_str(), "localhost");
    assert_eq!(c.pkdns.user_keys_republisher_interval, 14_400);
    assert_eq!(c.pkdns.dht_relay_nodes.as_ref().unwrap().len(), 2);
    assert_eq!(c.logging.filter(), "info", "no line per request by default");
}

#[test]
fn the_first_start_file_runs_on_the_defaults_with_a_password_of_its_own() {
    let text = first_start_file();
    let loaded = load_env(&text, &[]).unwrap().config;
    let password = loaded.admin.admin_password.clone();
    assert_eq!(password.len(), 26);
    assert_ne!(
        password,
        load_env(&first_start_file(), &[])
            .unwrap()
            .config
            .admin
            .admin_password
    );
    let defaults = Config {
        admin: Admin {
            admin_password: password,
            ..Admin::default()
        },
        ..Config::default()
    };
    assert_eq!(loaded, defaults);
}

/// The sample with its examples uncommented too (`# key = value` and `# [[table]]` lines), on S3 so
/// that the S3 examples apply.
fn sample_with_examples() -> String {
    SAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest.to_string(),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("type = \"file_system\"", "type = \"s3\"")
}

/// Whether a line is `key = value` or `[[table]]`.
fn is_setting(line: &str) -> bool {
    let key = line.split_once(" = ").map_or("", |(key, _)| key);
    line.starts_with("[[")
        || (!key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
}

#[test]
fn every_value_the_sample_shows_is_the_default() {
    let loaded = load(SAMPLE).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let defaults = Config {
        admin: Admin {
            admin_password: PASSWORD.into(),
            ..Admin::default()
        },
        ..Config::default()
    };
    assert_eq!(loaded.config, defaults);
    assert!(!loaded.config.metrics.enabled, "nothing listens on 6289");
    assert_eq!(loaded.config.logging.filter(), "info", "no debug lines");
}

#[test]
fn the_sample_examples_are_valid_and_every_key_is_documented() {
    let loaded = load(&sample_with_examples()).unwrap();
    let c = &loaded.config;
    assert_eq!(
        c.general.database_url.as_ref().unwrap().kind(),
        DatabaseKind::Postgres
    );
    assert_eq!(c.drive.rate_limits.len(), 2);
    assert_eq!(c.drive.rate_limits[1].whitelist, ["127.0.0.1"]);
    assert_eq!(String::from(c.default_quotas.rate_write.unwrap()), "5mb/s");
    assert_eq!(c.storage.default_quota_mb, Some(1000));
    assert_eq!(c.storage.bucket_name.as_deref(), Some("homestead"));
    assert_eq!(c.pkdns.public_icann_http_port, Some(80));
    assert_eq!(c.pkdns.dht_bootstrap_nodes.as_ref().unwrap().len(), 4);
    assert_eq!(c.pkdns.relay_request_timeout_ms.unwrap().get(), 5000);
    assert_eq!(c.otlp.endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    // Every key the configuration has (with every example set, so the optional ones too) appears in the
    // sample as `key = ` or `# key = `.
    let table = toml::Table::try_from(c).unwrap();
    let mut keys = Vec::new();
    for (section, value) in &table {
        for (key, value) in value.as_table().unwrap() {
            match value.as_array().filter(|a| a.iter().all(|v| v.is_table())) {
                Some(entries) if !entries.is_empty() => {
                    let table = format!("[[{section}.{key}]]");
                    assert!(SAMPLE.contains(&table), "{table}");
                    for entry in entries {
                        keys.extend(entry.as_table().unwrap().keys().cloned());
                    }
                }
                _ => keys.push(key.clone()),
            }
        }
        assert!(SAMPLE.contains(&format!("[{section}]")), "{section}");
    }
    assert!(keys.len() > 50, "{keys:?}");
    for key in keys {
        let documented = SAMPLE.lines().any(|line| {
            line.trim_start_matches("# ")
                .starts_with(&format!("{key} = "))
        });
        assert!(documented, "`{key}` is not in the sample");
    }
}

#[test]
fn the_reference_0_9_3_sample_is_accepted() {
    // The sample pubky-homeserver 0.9.3 ships (OPERATIONS.md §3.5), with its settings uncommented.
    let text = r#"
[general]
database_url = "postgres://localhost:5432/pubky_homeserver"
signup_mode = "token_required"
user_storage_quota_mb = 0

[drive]
pubky_listen_socket = "127.0.0.1:6287"
icann_listen_socket = "127.0.0.1:6286"

[[drive.rate_limits]]
path = "/session"
method = "POST"
quota = "20r/m"
key = "ip"
whitelist = ["127.0.0.1"]

[default_quotas]
rate_read = "10mb/s"
rate_write = "5mb/s"
unauthenticated_ip_rate_read = "1mb/s"

[storage]
type = "file_system"

[admin]
enabled = true
listen_socket = "127.0.0.1:6288"

[metrics]
enabled = true
listen_socket = "127.0.0.1:6289"

[pkdns]
public_ip = "127.0.0.1"
public_pubky_tls_port = 6287
public_icann_http_port = 80
icann_domain = "localhost"
user_keys_republisher_interval = 14400
dht_bootstrap_nodes = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
    "relay.pkarr.org:6881",
]
dht_relay_nodes = ["https://pkarr.pubky.app", "https://pkarr.pubky.org"]
dht_request_timeout_ms = 2000

[logging]
level = "info"
module_levels = ["pubky_homeserver=debug", "tower_http=debug"]
"#;
    let loaded = load(text).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert!(c.metrics.enabled);
    assert_eq!(c.drive.rate_limits.len(), 1);
    assert_eq!(c.pkdns.dht_bootstrap_nodes.unwrap().len(), 4);
    assert_eq!(c.pkdns.dht_request_timeout_ms.unwrap().get(), 2000);
    assert!(c.drive.websites, "on by default");
    assert_eq!(c.pkdns.relay_request_timeout_ms, None);
}

#[test]
fn a_0_17_1_config_with_the_new_keys_is_accepted() {
    // Every key of PROTOCOL-0.17 §21, on top of the 0.9.3 keys, which 0.17.1 keeps unchanged.
    let text = r#"
[general]
database_url = "postgres://localhost:5432/pubky_homeserver"
signup_mode = "open"
user_storage_quota_mb = 0

[drive]
pubky_listen_socket = "0.0.0.0:6287"
icann_listen_socket = "0.0.0.0:6286"
websites = false
icann_client_identity = { mode = "proxy_protocol", trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"] }
pubky_client_identity = { mode = "direct" }

[storage]
type = "file_system"
default_quota_mb = 500

[admin]
enabled = false

[metrics]
enabled = false

[pkdns]
public_ip = "203.0.113.7"
icann_domain = "homeserver.example.com"
dht_relay_nodes = ["https://pkarr.pubky.app"]
dht_request_timeout_ms = 2000
relay_request_timeout_ms = 5000

[logging]
level = "info"
module_levels = []
"#;
    let loaded = load_env(text, &[]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert!(!c.drive.websites);
    assert!(matches!(
        &c.drive.icann_client_identity,
        ClientIdentity::ProxyProtocol { trusted_proxies } if trusted_proxies.len() == 2
    ));
    assert_eq!(c.drive.pubky_client_identity, ClientIdentity::Direct);
    assert_eq!(c.pkdns.relay_request_timeout_ms.unwrap().get(), 5000);
    assert_eq!(c.pkdns.dht_request_timeout_ms.unwrap().get(), 2000);
    assert_eq!(c.storage.default_quota_mb, Some(500));
}

#[test]
fn a_reference_config_is_accepted_as_it_is() {
    let text = r#"
[general]
database_url = "postgres://postgres:postgres@localhost:5432/pubky_homeserver"
signup_mode = "open"
user_storage_quota_mb = 0

[drive]
pubky_listen_socket = "0.0.0.0:6287"
icann_listen_socket = "0.0.0.0:6286"

[storage]
type = "file_system"

[admin]
enabled = true
listen_socket = "127.0.0.1:6288"
admin_password = "s3cret"

[pkdns]
public_ip = "203.0.113.7"
icann_domain = "homeserver.example.com"
dht_relay_nodes = ["https://pkarr.pubky.app"]
dht_request_timeout_ms = 5000

[logging]
level = "DEBUG"
module_levels = ["pubky_homeserver=debug"]
"#;
    let c = load(text).unwrap().config;
    assert_eq!(c.general.signup_mode, SignupMode::Open);
    assert_eq!(c.pkdns.public_ip.to_string(), "203.0.113.7");
    assert_eq!(c.pkdns.dht_request_timeout_ms.unwrap().get(), 5000);
    assert_eq!(c.logging.level, LogLevel::Debug);
}

#[test]
fn unknown_keys_and_sections_are_named() {
    let err = error("[general]\nsignup = \"open\"\n");
    assert!(
        err.starts_with("config.toml: `general.signup`: unknown field `signup`"),
        "{err}"
    );
    let err = error("[webdav]\nenabled = true\n");
    assert!(err.contains("`webdav`: unknown field `webdav`"), "{err}");
    let err = error(
        "[[drive.rate_limits]]\npath = \"/x\"\nmethod = \"GET\"\nquota = \"1r/s\"\nkey = \"ip\"\nbrust = 3\n",
    );
    assert!(err.contains("`drive.rate_limits[0].brust`"), "{err}");
}

#[test]
fn invalid_values_name_key_value_and_what_is_allowed() {
    let cases = [
        (
            "[general]\nsignup_mode = \"closed\"",
            "general.signup_mode",
            "`closed`, expected `open` or `token_required`",
        ),
        (
            "[general]\ndatabase_url = \"mysql://h/db\"",
            "general.database_url",
            "`mysql://h/db` is not a database URL",
        ),
        (
            "[drive]\nicann_listen_socket = \"localhost\"",
            "drive.icann_listen_socket",
            "`localhost` is not a socket address: expected ip:port",
        ),
        (
            "[admin]\nlisten_socket = \"0.0.0.0\"",
            "admin.listen_socket",
            "`0.0.0.0` is not a socket address",
        ),
        (
            "[metrics]\nlisten_socket = 6289",
            "metrics.listen_socket",
            "expected a string",
        ),
        (
            "[drive]\nwebsites = \"yes\"",
            "drive.websites",
            "expected a boolean",
        ),
        (
            "[pkdns]\nrelay_request_timeout_ms = 0",
            "pkdns.relay_request_timeout_ms",
            "nonzero",
        ),
        (
            "[admin]\nenabled = \"yes\"",
            "admin.enabled",
            "expected a boolean",
        ),
        (
            "[pkdns]\npublic_ip = \"example.com\"",
            "pkdns.public_ip",
            "`example.com` is not an IP address",
        ),
        (
            "[pkdns]\nicann_domain = \"bad_domain!\"",
            "pkdns.icann_domain",
            "`bad_domain!` is not a host name",
        ),
        (
            "[pkdns]\ndht_bootstrap_nodes = [\"[::1]:6881\"]",
            "pkdns.dht_bootstrap_nodes[0]",
            "not a DHT node address",
        ),
        (
            "[pkdns]\ndht_relay_nodes = [\"ftp://relay\"]",
            "pkdns.dht_relay_nodes[0]",
            "not a relay URL",
        ),
        (
            "[pkdns]\ndht_request_timeout_ms = 0",
            "pkdns.dht_request_timeout_ms",
            "nonzero",
        ),
        (
            "[pkdns]\npublic_pubky_tls_port = 70000",
            "pkdns.public_pubky_tls_port",
            "70000",
        ),
        (
            "[default_quotas]\nrate_read = \"10r/s\"",
            "default_quotas.rate_read",
            "`10r/s` is not a bandwidth",
        ),
        (
            "[logging]\nlevel = \"loud\"",
            "logging.level",
            "`loud` is not a log level",
        ),
        (
            "[logging]\nmodule_levels = [\"homestead\"]",
            "logging.module_levels[0]",
            "expected target=level",
        ),
        (
            "[storage]\ntype = \"tape\"",
            "storage.type",
            "unknown variant `tape`",
        ),
        (
            "[[drive.rate_limits]]\npath = \"/x\"\nmethod = \"FETCH\"\nquota = \"1r/s\"\nkey = \"ip\"",
            "drive.rate_limits[0].method",
            "`FETCH` is not an HTTP method",
        ),
        (
            "[[drive.rate_limits]]\npath = \"/x\"\nmethod = \"GET\"\nquota = \"1mb/s\"\nkey = \"ip\"",
            "drive.rate_limits[0].quota",
            "not a request quota",
        ),
        (
            "[[drive.rate_limits]]\npath = \"/x\"\nmethod = \"GET\"\nquota = \"1r/s\"\nkey = \"device\"",
            "drive.rate_limits[0].key",
            "expected `ip` or `user`",
        ),
        (
            "[[drive.rate_limits]]\npath = \"x\"\nmethod = \"GET\"\nquota = \"1r/s\"\nkey = \"ip\"",
            "drive.rate_limits[0].path",
            "must start with `/`",
        ),
        (
            "[storage]\ntype = \"s3\"\nbucket_name = \"A\"",
            "storage.bucket_name",
            "is not an S3 bucket name",
        ),
        (
            "[storage]\ntype = \"s3\"",
            "storage.bucket_name",
            "required when storage.type = \"s3\"",
        ),
        (
            "[storage]\ns3_endpoint = \"http://127.0.0.1:9000\"",
            "storage.s3_endpoint",
            "only used with storage.type = \"s3\"",
        ),
        (
            "[storage]\ntype = \"s3\"\nbucket_name = \"abc\"\ns3_endpoint = \"localhost:9000\"",
            "storage.s3_endpoint",
            "not an endpoint URL",
        ),
    ];
    for (text, key, needle) in cases {
        let err = error(text);
        assert!(
            err.starts_with(&format!("config.toml: `{key}`: ")),
            "{text}: {err}"
        );
        assert!(err.contains(needle), "{text}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn reference_settings_homestead_does_not_support_are_named_as_such() {
    let err = error("[storage]\ntype = \"google_bucket\"\nbucket_name = \"b\"");
    assert!(
        err.contains(
            "`storage.type`: \"google_bucket\" is a reference setting Homestead does not support"
        ),
        "{err}"
    );
    let err = error("[storage]\ncredential = \"/etc/gcs.json\"");
    assert!(err.contains("`storage.credential`"), "{err}");
    assert!(err.contains("not supported by Homestead"), "{err}");
}

#[test]
fn syntax_errors_give_the_line() {
    let err = load("[general]\nsignup_mode = \n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn arrays_replace_the_default_array() {
    let text = "[[drive.rate_limits]]\npath = \"/pub/**\"\nmethod = \"put\"\nquota = \"5r/s\"\nkey = \"user\"\nburst = 10\n";
    let c = load(text).unwrap().config;
    assert_eq!(c.drive.rate_limits.len(), 1);
    let limit = &c.drive.rate_limits[0];
    assert_eq!(limit.method.as_str(), "PUT");
    assert_eq!(limit.key, LimitKey::User);
    assert_eq!(limit.burst.map(|b| b.get()), Some(10));
    let c = load("[pkdns]\ndht_relay_nodes = []").unwrap().config;
    assert_eq!(c.pkdns.dht_relay_nodes, Some(vec![]));
}

#[test]
fn legacy_quota_is_folded_into_the_storage_default() {
    let loaded = load("[general]\nuser_storage_quota_mb = 50").unwrap();
    assert_eq!(loaded.config.storage.default_quota_mb, Some(50));
    assert!(loaded.warnings[0].contains("deprecated"));
    let c = load("[general]\nuser_storage_quota_mb = 50\n[storage]\ndefault_quota_mb = 7")
        .unwrap()
        .config;
    assert_eq!(c.storage.default_quota_mb, Some(7));
}

#[test]
fn short_republisher_interval_is_raised() {
    let loaded = load("[pkdns]\nuser_keys_republisher_interval = 60").unwrap();
    assert_eq!(loaded.config.pkdns.user_keys_republisher_interval, 1800);
    assert!(loaded.warnings[0].contains("raised to 1800"));
    let c = load("[pkdns]\nuser_keys_republisher_interval = 0")
        .unwrap()
        .config;
    assert_eq!(c.pkdns.user_keys_republisher_interval, 0);
}

#[test]
fn environment_overrides_the_file_with_typed_values() {
    let loaded = load_env(
        "[admin]\nenabled = true\nadmin_password = \"file\"",
        &[
            ("HOMESTEAD_ADMIN__ENABLED", "false"),
            ("HOMESTEAD_ADMIN__ADMIN_PASSWORD", "1234"),
            ("HOMESTEAD_GENERAL__DATABASE_URL", "postgres://localhost/h"),
            (
                "HOMESTEAD_PKDNS__DHT_BOOTSTRAP_NODES",
                "[\"127.0.0.1:6881\"]",
            ),
            ("HOMESTEAD_DRIVE__ICANN_LISTEN_SOCKET", "127.0.0.1:0"),
            ("HOMESTEAD_DATA_DIR", "/ignored/here"),
            ("OTHER", "x"),
        ],
    )
    .unwrap();
    let c = loaded.config;
    assert!(!c.admin.enabled);
    assert_eq!(c.admin.admin_password, "1234");
    assert_eq!(
        c.general.database_url.unwrap().as_str(),
        "postgres://localhost/h"
    );
    assert_eq!(
        c.pkdns.dht_bootstrap_nodes.unwrap()[0].as_str(),
        "127.0.0.1:6881"
    );
    assert_eq!(c.drive.icann_listen_socket.port(), 0);
}

#[test]
fn environment_errors_name_the_variable() {
    let err = load_env("", &[("HOMESTEAD_GENERAL__SIGNUP_MODE", "closed")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("HOMESTEAD_GENERAL__SIGNUP_MODE: `general.signup_mode`:"),
        "{err}"
    );
    let err = load_env("", &[("HOMESTEAD_GENERAL__NOPE", "1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("HOMESTEAD_GENERAL__NOPE: `general.nope`: unknown field"),
        "{err}"
    );
    let err = load_env("", &[("HOMESTEAD_SIGNUP_MODE", "open")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HOMESTEAD_SIGNUP_MODE: not a config key"),
        "{err}"
    );
    let err = load_env("", &[("HOMESTEAD_STORAGE__TYPE", "google_bucket")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("HOMESTEAD_STORAGE__TYPE: `storage.type`"),
        "{err}"
    );
}

#[test]
fn load_writes_the_commented_sample_once_and_keeps_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    Config::load(&path, true).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with(&commented_sample()), "{written}");
    assert!(
        written.contains("\n[admin]\nadmin_password = \""),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file holds the admin password");
    Config::load(&path, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written,
        "written once"
    );
    std::fs::write(&path, "[general\n").unwrap();
    assert!(matches!(
        Config::load(&path, true),
        Err(ConfigError::Syntax { .. })
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "[general\n");
    let missing = dir.path().join("elsewhere.toml");
    assert!(matches!(
        Config::load(&missing, false),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn data_dir_is_created_and_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(&dir.path().join("a/b")).unwrap();
    assert!(data.path().is_dir());
    assert_eq!(data.secret_file(), dir.path().join("a/b/secret"));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = DataDir::open(&file).unwrap_err();
    assert!(err.to_string().contains("is a file"), "{err}");
}

#[test]
fn globs_match_like_the_reference() {
    let glob = |g: &str| PathGlob::try_from(g.to_string()).unwrap();
    assert!(glob("/session").matches("/session"));
    assert!(!glob("/session").matches("/session/"));
    assert!(glob("/signup_tokens/*").matches("/signup_tokens/AAAA-BBBB-CCCC"));
    assert!(!glob("/signup_tokens/*").matches("/signup_tokens/a/b"));
    assert!(glob("/pub/**").matches("/pub/a/b/c"));
    assert!(glob("/pub/**/x").matches("/pub/a/b/x"));
    assert!(glob("/pub/?.txt").matches("/pub/a.txt"));
    assert!(!glob("/pub/?.txt").matches("/pub/ab.txt"));
    assert!(glob("/pub/[a-c].txt").matches("/pub/b.txt"));
    assert!(!glob("/pub/[a-c].txt").matches("/pub/d.txt"));
    assert!(glob("/{session,signup}").matches("/signup"));
    assert!(!glob("/{session,signup}").matches("/events/"));
}

#[test]
fn trusted_proxies_are_addresses_or_ranges() {
    let range = |r: &str| IpRange::try_from(r.to_string());
    let local = range("127.0.0.1").unwrap();
    assert!(local.contains("127.0.0.1".parse().unwrap()));
    assert!(!local.contains("127.0.0.2".parse().unwrap()));
    assert!(local.contains("::ffff:127.0.0.1".parse().unwrap()));
    let private = range("10.0.0.0/8").unwrap();
    assert!(private.contains("10.200.3.4".parse().unwrap()));
    assert!(!private.contains("11.0.0.1".parse().unwrap()));
    let v6 = range("fd00::/8").unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(
        range("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
        let err = range(bad).unwrap_err();
        assert!(err.contains(bad), "{err}");
    }
    let config = load("[drive]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]").unwrap();
    assert_eq!(config.config.drive.trusted_proxies.len(), 2);
    let err = load("[drive]\ntrusted_proxies = [\"10.0.0.0/40\"]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("drive.trusted_proxies") || err.contains("trusted_proxies"),
        "{err}"
    );
}

#[test]
fn client_identity_is_direct_or_the_proxy_protocol_from_trusted_ranges() {
    let drive = |text: &str| load(&format!("[drive]\n{text}")).map(|l| l.config.drive);
    let defaults = drive("").unwrap();
    assert_eq!(defaults.icann_client_identity, ClientIdentity::Direct);
    assert_eq!(defaults.pubky_client_identity, ClientIdentity::Direct);
    let set = drive(
        "icann_client_identity = { mode = \"direct\" }\n\
         pubky_client_identity = { mode = \"proxy_protocol\", trusted_proxies = [\"127.0.0.1/32\", \"fd00::/8\"] }",
    )
    .unwrap();
    assert_eq!(set.icann_client_identity, ClientIdentity::Direct);
    let ClientIdentity::ProxyProtocol { trusted_proxies } = &set.pubky_client_identity else {
        panic!("{:?}", set.pubky_client_identity);
    };
    assert_eq!(trusted_proxies.len(), 2);
    assert!(trusted_proxies[1].contains("fd12::1".parse().unwrap()));
    // The environment takes the same inline table.
    let env = load_env(
        "",
        &[
            ("HOMESTEAD_ADMIN__ADMIN_PASSWORD", PASSWORD),
            (
                "HOMESTEAD_DRIVE__ICANN_CLIENT_IDENTITY",
                "{ mode = \"proxy_protocol\", trusted_proxies = [\"10.0.0.0/8\"] }",
            ),
        ],
    )
    .unwrap();
    assert!(matches!(
        env.config.drive.icann_client_identity,
        ClientIdentity::ProxyProtocol { .. }
    ));

    let cases = [
        (
            "icann_client_identity = { mode = \"proxy_protocol\" }",
            "`drive.icann_client_identity`: mode = \"proxy_protocol\" needs a non-empty `trusted_proxies`",
        ),
        (
            "pubky_client_identity = { mode = \"proxy_protocol\", trusted_proxies = [] }",
            "`drive.pubky_client_identity`: mode = \"proxy_protocol\" needs a non-empty `trusted_proxies`",
        ),
        (
            "pubky_client_identity = { mode = \"direct\", trusted_proxies = [\"127.0.0.1\"] }",
            "`trusted_proxies` is only used with mode = \"proxy_protocol\"",
        ),
        (
            "icann_client_identity = { mode = \"proxy_protocol\", trusted_proxies = [\"10.0.0.0/8\"], \
             trusted = [] }",
            "`drive.icann_client_identity.trusted`: unknown field `trusted`",
        ),
        (
            "icann_client_identity = { mode = \"haproxy\" }",
            "unknown variant `haproxy`, expected `direct` or `proxy_protocol`",
        ),
        (
            "icann_client_identity = { trusted_proxies = [\"10.0.0.0/8\"] }",
            "missing field `mode`",
        ),
        (
            "icann_client_identity = { mode = \"proxy_protocol\", trusted_proxies = [\"10.0.0.0/40\"] }",
            "`drive.icann_client_identity.trusted_proxies[0]`: `10.0.0.0/40` is not an IP address",
        ),
        (
            "icann_client_identity = \"direct\"",
            "`drive.icann_client_identity`",
        ),
    ];
    for (text, expected) in cases {
        let err = drive(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn the_admin_listener_needs_a_long_password_of_its_own() {
    let unset = load_env("", &[]).unwrap_err().to_string();
    assert!(
        unset.contains("admin.admin_password") && unset.contains("not set"),
        "{unset}"
    );
    let short = load_env("[admin]\nadmin_password = \"admin\"", &[])
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("admin.admin_password") && short.contains("at least 12"),
        "{short}"
    );
    assert!(load_env("[admin]\nadmin_password = \"twelve-chars\"", &[]).is_ok());
    assert!(load_env("[admin]\nenabled = false", &[]).is_ok());
}

#[test]
fn log_format_is_text_or_json() {
    assert_eq!(load("").unwrap().config.logging.format, LogFormat::Text);
    assert_eq!(
        load("[logging]\nformat = \"json\"")
            .unwrap()
            .config
            .logging
            .format,
        LogFormat::Json
    );
    let err = load("[logging]\nformat = \"xml\"").unwrap_err().to_string();
    assert!(
        err.contains("logging.format") && err.contains("xml"),
        "{err}"
    );
}
