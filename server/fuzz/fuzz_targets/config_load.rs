//! `Config::load` with arbitrary flags and an arbitrary `--config` TOML
//! file: it returns a configuration or an error naming what is wrong, and
//! never panics. A loaded configuration is valid, and its printed form
//! (`--print-config`) loads back to the same settings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liveslice_server::config::{Config, LoadError};

fn file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("liveslice-fuzz-{}-{name}.toml", std::process::id()))
}

// Input: command-line arguments, one per line, then optionally a NUL byte
// and the text of a `--config` file.
fuzz_target!(|data: &[u8]| {
    let (args, toml) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut argv = vec!["liveslice-server".to_string()];
    // Only the target chooses files to read (an arbitrary `--config` could
    // name a FIFO or /dev/zero).
    argv.extend(
        String::from_utf8_lossy(args)
            .split('\n')
            .take(16)
            .filter(|a| !a.contains("conf"))
            .map(str::to_string),
    );
    if let Some(text) = toml {
        let p = file("in");
        if std::fs::write(&p, text).is_err() {
            return;
        }
        argv.push("--config".into());
        argv.push(p.to_string_lossy().into_owned());
    }
    match Config::load(&argv) {
        Ok(c) => {
            c.validate().expect("a loaded configuration is valid");
            let printed = c.to_toml();
            let p = file("printed");
            if std::fs::write(&p, &printed).is_ok() {
                let again = Config::load([
                    "x".to_string(),
                    "--config".into(),
                    p.to_string_lossy().into_owned(),
                ]);
                match again {
                    Ok(c2) => assert_eq!(c2.to_toml(), printed),
                    // Secrets are printed hidden: such a file is not
                    // expected to load back.
                    Err(e) => assert!(printed.contains("<hidden>"), "{e}\n{printed}"),
                }
            }
        }
        Err(LoadError::Flags(e)) => {
            let _ = e.to_string();
        }
        Err(LoadError::Invalid(e)) => {
            assert!(!e.key.is_empty());
            let _ = e.to_string();
        }
    }
});
