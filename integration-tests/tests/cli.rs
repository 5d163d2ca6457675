//! The command line as operators use it: `init`, the data directory, and configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use homestead_integration_tests::TestNet;

fn homestead(args: &[&str]) -> std::process::Output {
    Command::new(homestead_integration_tests::binary())
        .args(args)
        .output()
        .expect("run homestead")
}

#[test]
fn init_writes_config_and_key_once_and_prints_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let first = homestead(&["--data-dir", data, "init"]);
    assert!(first.status.success(), "{first:?}");
    let key = String::from_utf8(first.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 52, "{key}");
    let secret = data_dir.join("secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700, "the data directory is private");
    assert_eq!(
        mode(&data_dir.join("config.toml")),
        0o600,
        "it holds the admin password"
    );
    let config = std::fs::read_to_string(data_dir.join("config.toml")).unwrap();
    assert!(
        config.contains("# signup_mode = \"token_required\""),
        "written commented out"
    );
    let second = homestead(&["init", "--data-dir", data]);
    assert_eq!(String::from_utf8(second.stdout).unwrap().trim(), key);
}

#[test]
fn the_reference_test_key_is_read_from_the_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "00".repeat(32)).unwrap();
    let out = homestead(&["-d", dir.path().to_str().unwrap(), "init"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
    );
}

#[test]
fn invalid_config_stops_the_start_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[general]\nsignup_mode = \"closed\"\n",
    )
    .unwrap();
    let out = homestead(&["--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("`general.signup_mode`: unknown variant `closed`"),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_stops_the_start_and_names_the_listener() {
    let net = TestNet::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[drive]\nicann_listen_socket = \"127.0.0.1:{port}\"\npubky_listen_socket = \"127.0.0.1:0\"\n\
         [admin]\nenabled = false\n[pkdns]\ndht_bootstrap_nodes = [{:?}]\ndht_relay_nodes = []\n",
        net.bootstrap()[0]
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let out = homestead(&["--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "cannot bind the ICANN HTTP listener to 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}
