//! Tests of the configuration as a whole: the embedded defaults, layering
//! through `Settings::from_config`, errors that name their key, redaction of
//! secrets and each section's validation as seen through a load.

use super::*;

#[test]
fn embedded_defaults_are_valid() {
    let s = Settings::defaults();
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.server.host, "127.0.0.1");
    assert_eq!(s.log.file_max_bytes, 10 * 1024 * 1024);
    assert_eq!(s.log.file_max_files, 5);
    assert_eq!(s.health.timeout_ms, 1000);
}

#[test]
fn an_unknown_key_is_named() {
    let err = Settings::from_toml("[server]\nprot = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server"), "{err}");
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn an_unknown_section_is_named() {
    let err = Settings::from_toml("[sever]\nport = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sever"), "{err}");
}

#[test]
fn a_bad_value_names_its_key() {
    let err = Settings::from_toml("[server]\nport = \"eighty\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.port"), "{err}");
    let err = Settings::from_toml("[server]\nport = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.port"), "{err}");
    let err = Settings::from_toml("[supervision]\nbackoff_jitter = 2.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("supervision.backoff_jitter"), "{err}");
    let err = Settings::from_toml("[log]\nformat = \"xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.format"), "{err}");
}

/// A value under its floor, or a share outside 0 to 1, is refused naming
/// the key and the bound.
#[test]
fn a_value_out_of_bounds_names_its_key_and_the_bound() {
    for (toml, key, bound) in [
        ("[events]\ncapacity = 0\n", "events.capacity", "at least 1"),
        (
            "[health]\nwatch_interval_ms = 99\n",
            "health.watch_interval_ms",
            "at least 100",
        ),
        (
            "[telemetry]\nsample_ratio = -0.5\n",
            "telemetry.sample_ratio",
            "between 0 and 1",
        ),
        (
            "[supervision]\nbackoff_jitter = 1.5\n",
            "supervision.backoff_jitter",
            "between 0 and 1",
        ),
    ] {
        let err = Settings::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(bound), "{toml}: {err}");
    }
    assert!(Settings::from_toml("[health]\nwatch_interval_ms = 100\n").is_ok());
}

/// Each timeout is named for itself (the probe timeout was once reported
/// as `database.connect_timeout_ms`), and so are the new cluster keys.
#[test]
fn every_bad_timeout_names_its_own_key() {
    for (toml, key) in [
        (
            "[database]\nprobe_timeout_ms = 0\n",
            "database.probe_timeout_ms",
        ),
        (
            "[database]\nprobe_interval_ms = 0\n",
            "database.probe_interval_ms",
        ),
        (
            "[database]\nconnect_timeout_ms = 0\n",
            "database.connect_timeout_ms",
        ),
        ("[redis]\npresence_ttl_ms = 0\n", "redis.presence_ttl_ms"),
        ("[redis]\nlease_ttl_ms = 0\n", "redis.lease_ttl_ms"),
    ] {
        let err = Settings::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains(key), "{toml:?}: {err}");
    }
}

#[test]
fn secrets_are_redacted_when_printed() {
    let s = Settings::from_toml("[auth]\njwt_secret = \"hunter2-very-secret\"\n").unwrap();
    assert_eq!(s.auth.jwt_secret.expose(), "hunter2-very-secret");
    let shown = format!("{}{:?}", s.to_toml(), s);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn admin_and_monitor_secrets_are_redacted_and_a_short_token_is_refused_unseen() {
    let s = Settings::from_toml(
        "[admin]\ntoken = \"admin-token-0123456789\"\n\
         [monitor]\nwebhook_url = \"http://hooks.local/T0/s3cr3t\"\n\
         smtp_host = \"localhost\"\nsmtp_from = \"m@example.test\"\n\
         smtp_to = [\"ops@example.test\"]\nsmtp_password = \"pa55word\"\n",
    )
    .unwrap();
    let shown = format!("{}{:?}", s.to_toml(), s);
    for secret in ["admin-token-0123456789", "s3cr3t", "pa55word"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let err = Settings::from_toml("[admin]\ntoken = \"short-t0ken\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.token") && !err.contains("short-t0ken"),
        "{err}"
    );
    let s = Settings::from_toml("[monitor]\nwebhook_url = \"https://hooks.local/s3cr3t\"\n")
        .unwrap_or_else(|e| panic!("an https:// webhook is accepted: {e}"));
    assert_eq!(s.monitor.webhook_url.expose(), "https://hooks.local/s3cr3t");
    let err = Settings::from_toml("[monitor]\nwebhook_url = \"ftp://hooks.local/s3cr3t\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("monitor.webhook_url") && !err.contains("s3cr3t"),
        "{err}"
    );
    Settings::from_toml("[monitor]\nurl = \"https://web-1.local/health/live\"\n")
        .unwrap_or_else(|e| panic!("an https:// liveness URL is accepted: {e}"));
    let err = Settings::from_toml("[monitor]\nfailures = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("monitor.failures"), "{err}");
    let err = Settings::from_toml("[monitor]\nsmtp_host = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("monitor.smtp_from"), "{err}");
}

#[test]
fn the_effective_config_renders_as_toml_that_loads_again() {
    let rendered = Settings::defaults().to_toml();
    let again = Settings::from_toml(&rendered).unwrap();
    assert_eq!(again.server.port, 8080);
}

#[test]
fn service_sections_load_validate_and_hide_their_secrets() {
    let s = Settings::from_toml(
        "[[printers.devices]]\nname = \"mk4\"\nurl = \"http://10.0.0.21\"\napi_key = \"0ct0-k3y\"\n\
         [[trending.feeds]]\nname = \"news\"\nurl = \"http://u:fe3d-pw@feeds.local/t.json\"\n\
         [files]\ndirectories = [\"prints\"]\n",
    )
    .unwrap();
    assert_eq!(
        s.printers.devices[0].interval_ms, 5000,
        "the default interval"
    );
    assert_eq!(s.files.extensions, ["gcode", "3mf", "stl"]);
    let shown = format!("{}{:?}", s.to_toml(), s);
    for secret in ["0ct0-k3y", "fe3d-pw"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let again = Settings::from_toml(&s.to_toml()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.printers.devices[0].name, "mk4");
    let s = Settings::from_toml(
        "[[trending.feeds]]\nname = \"x\"\nurl = \"https://u:s3cr3t@a/t.json\"\n\
         [[printers.devices]]\nname = \"p\"\nurl = \"https://octo.local\"\napi_key = \"k\"\n",
    )
    .unwrap_or_else(|e| panic!("https:// feeds and printers are accepted: {e}"));
    assert_eq!(
        s.trending.feeds[0].url.expose(),
        "https://u:s3cr3t@a/t.json"
    );
    assert_eq!(s.printers.devices[0].url.expose(), "https://octo.local");
    let err =
        Settings::from_toml("[[trending.feeds]]\nname = \"x\"\nurl = \"ftp://u:s3cr3t@a/\"\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("trending.feeds[0].url") && !err.contains("s3cr3t"),
        "{err}"
    );
    let err = Settings::from_toml(
        "[[printers.devices]]\nname = \"a\"\nurl = \"http://a\"\napi_key = \"k\"\n\
         [[printers.devices]]\nname = \"a\"\nurl = \"http://b\"\napi_key = \"k\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("printers.devices[1].name"), "{err}");
    let err = Settings::from_toml("[files]\nextensions = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("files.extensions"), "{err}");
}

#[test]
fn a_bad_ca_file_is_refused_naming_its_key() {
    let err = Settings::from_toml("[tls]\nca_file = \"/no/such/ca.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.ca_file") && err.contains("/no/such/ca.pem"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("holdfast-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-a-bundle.pem");
    std::fs::write(&not_pem, "no certificate here\n").unwrap();
    let err = Settings::from_toml(&format!("[tls]\nca_file = \"{}\"\n", not_pem.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );
    assert_eq!(Settings::defaults().tls.ca_file, "", "no bundle by default");
}

#[test]
fn smtp_security_is_none_starttls_or_tls() {
    assert_eq!(
        Settings::defaults().monitor.smtp_security,
        SmtpSecurity::None,
        "today's plain SMTP stays the default"
    );
    for (value, expected) in [
        ("none", SmtpSecurity::None),
        ("starttls", SmtpSecurity::Starttls),
        ("tls", SmtpSecurity::Tls),
    ] {
        let s = Settings::from_toml(&format!("[monitor]\nsmtp_security = \"{value}\"\n")).unwrap();
        assert_eq!(s.monitor.smtp_security, expected);
    }
    let err = Settings::from_toml("[monitor]\nsmtp_security = \"ssl\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("monitor.smtp_security") && err.contains("starttls"),
        "{err}"
    );
}
