//! Config parsing: `Config::load` (TOML, unknown keys, durations, the
//! validation that follows) and `parse_duration` on arbitrary text.
//!
//! Properties: nothing panics; every error is one line (the CLI prints it as
//! `error: <file>: <key>: <reason>`) naming the file it came from and a key;
//! `load` and `parse` agree (a file that loads also parses).
#![no_main]

use std::io::Write;
use std::sync::LazyLock;

use gateway::config::{Config, parse_duration};
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().expect("tempdir"));

fuzz_target!(|raw: &str| {
    let _ = parse_duration(raw);

    // Config::load applies AUTHGW_* overrides from the environment: keep them out.
    for var in [
        "AUTHGW_DATABASE_URL",
        "AUTHGW_LISTEN",
        "AUTHGW_KEYS_DIR",
        "AUTHGW_LOG",
    ] {
        debug_assert!(std::env::var_os(var).is_none(), "unset {var} to fuzz");
    }
    let path = DIR.path().join("gateway.toml");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(raw.as_bytes()).expect("write");
    drop(file);
    let origin = path.display().to_string();

    let loaded = Config::load(&path, true);
    let parsed = Config::parse(raw, &origin);
    match &loaded {
        Ok(_) => assert!(parsed.is_ok(), "load succeeded where parse failed"),
        Err(e) => {
            let line = e.to_string();
            assert!(
                !line.contains('\n') && !line.contains('\r'),
                "multi-line error: {line:?}"
            );
            assert!(
                line.starts_with(&format!("{origin}: ")),
                "error does not name the file: {line:?}"
            );
            assert!(!e.key.is_empty(), "error names no key: {line:?}");
        }
    }
    if let Err(e) = &parsed {
        let line = e.to_string();
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "multi-line error: {line:?}"
        );
    }
});
