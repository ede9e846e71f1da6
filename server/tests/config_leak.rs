//! Regression (found by the `config_load` fuzz target): every unknown or
//! badly typed key in a `--config` file leaked its name (`Box::leak` to make
//! the error's key `'static`). Loading such a file again and again must not
//! grow the heap. Its own test binary: it counts the live heap bytes of the
//! whole process with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use liveslice_server::config::{Config, LoadError};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn bad_config_keys_do_not_leak() {
    let key = "an_unknown_setting_with_a_long_name_".repeat(4);
    let path = std::env::temp_dir().join(format!("liveslice-leak-{}.toml", std::process::id()));
    let cases = [
        format!("{key} = 1\n"),
        "auth-token = [1]\n".to_string(),
        "window = {}\n".to_string(),
    ];
    for text in &cases {
        std::fs::write(&path, text).unwrap();
        let load = || match Config::load(["x", "--config", path.to_str().unwrap()]) {
            Err(LoadError::Invalid(e)) => assert!(!e.key.is_empty() && e.key != "config", "{e}"),
            other => panic!("{text}: {other:?}"),
        };
        // Warm up (clap and std may allocate once and keep it).
        load();
        let before = LIVE.load(Ordering::Relaxed);
        for _ in 0..1000 {
            load();
        }
        let grown = LIVE.load(Ordering::Relaxed) - before;
        assert!(
            grown < 16 * 1024,
            "{text:?}: 1000 loads left {grown} more bytes on the heap"
        );
    }
    let _ = std::fs::remove_file(&path);
}
