//! The missing-tool rule itself: a missing tool fails the test, naming the
//! tool and its install command; `LIVESLICE_ALLOW_SKIP=1` turns that into a
//! recorded skip. (Its own binary: it sets the environment variable.)

mod common;

use common::{require_tool, skipped_file, ALLOW_SKIP};

#[test]
fn a_missing_tool_fails_unless_skipping_is_allowed() {
    std::env::remove_var(ALLOW_SKIP);
    assert!(require_tool(
        "t",
        "some-tool",
        true,
        "apt-get install some-tool"
    ));
    let err = std::panic::catch_unwind(|| {
        require_tool(
            "the frobnication check",
            "frobnicator",
            false,
            "pip install frob",
        )
    })
    .expect_err("a missing tool must fail the test");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    for part in [
        "the frobnication check",
        "frobnicator",
        "pip install frob",
        ALLOW_SKIP,
    ] {
        assert!(msg.contains(part), "{msg:?} does not say {part:?}");
    }

    // Anything but 1 does not allow skipping.
    std::env::set_var(ALLOW_SKIP, "yes");
    assert!(std::panic::catch_unwind(|| require_tool("x", "frobnicator", false, "-")).is_err());

    std::env::set_var(ALLOW_SKIP, "1");
    let marker = format!("frobnicator-{}", std::process::id());
    assert!(!require_tool(
        "the frobnication check",
        &marker,
        false,
        "pip install frob"
    ));
    std::env::remove_var(ALLOW_SKIP);
    let listed = std::fs::read_to_string(skipped_file()).unwrap_or_default();
    let line = listed
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("the skip is not in {}", skipped_file().display()));
    assert!(
        line.contains("a_missing_tool_fails_unless_skipping_is_allowed")
            && line.contains("SKIPPED the frobnication check"),
        "{line}"
    );
    // This was no real skip: keep it out of the run's summary.
    let rest: String = listed
        .lines()
        .filter(|l| !l.contains(&marker))
        .map(|l| format!("{l}\n"))
        .collect();
    if rest.is_empty() {
        let _ = std::fs::remove_file(skipped_file());
    } else {
        std::fs::write(skipped_file(), rest).unwrap();
    }
}
