//! The compilation cache: a second load of the same component reads the compiled code
//! back instead of compiling; a damaged entry is compiled again, never run; a new build
//! of a plugin replaces its old entry; and imports are refused before anything compiles.

mod common;

use std::path::Path;

use common::{batch, config, fixture};
use switchyard_plugin_host::{Compiled, HostOptions, LoadError, PluginHost, precheck};

fn host(cache: &Path) -> PluginHost {
    PluginHost::with_options(&HostOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..HostOptions::default()
    })
    .expect("host")
}

/// How a fresh host (another process, in effect) gets keep-all through `cache`.
fn reload(cache: &Path) -> Compiled {
    host(cache)
        .load("keep", &config("keep-all"))
        .expect("load")
        .compiled()
        .0
}

fn entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_second_load_reads_the_compiled_code_and_a_damaged_entry_is_compiled_again() {
    let cache = tempfile::tempdir().expect("temp dir");
    let first = host(cache.path())
        .load("keep", &config("keep-all"))
        .expect("first load");
    assert_eq!(first.compiled().0, Compiled::Fresh);
    let files = entries(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("keep-") && files[0].ends_with(".cwasm"));

    // Another host (another process, in effect) of the same settings reads it back.
    let mut second = host(cache.path())
        .load("keep", &config("keep-all"))
        .expect("second load");
    assert_eq!(second.compiled().0, Compiled::Cached);
    assert_eq!(
        second.filter(&batch(3)).expect("call").output,
        vec![true; 3]
    );

    // One flipped byte in the code: the checksum catches it, the entry is compiled again.
    let path = cache.path().join(&files[0]);
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let mut third = host(cache.path())
        .load("keep", &config("keep-all"))
        .expect("a damaged entry is not an error");
    assert_eq!(third.compiled().0, Compiled::Fresh);
    assert_eq!(third.filter(&batch(2)).expect("call").output, vec![true; 2]);
    assert_eq!(reload(cache.path()), Compiled::Cached);

    // A truncated entry (a crash mid-write without the rename would leave none, but a
    // disk can) is compiled again too.
    std::fs::write(&path, &bytes[..100]).expect("truncate");
    assert_eq!(reload(cache.path()), Compiled::Fresh);
}

#[test]
fn a_new_build_replaces_its_plugins_entry_and_leaves_others_alone() {
    let cache = tempfile::tempdir().expect("temp dir");
    let host = host(cache.path());
    host.load("gate", &config("keep-all")).expect("load");
    host.load("gate-2", &config("keep-all")).expect("load");
    assert_eq!(entries(cache.path()).len(), 2);
    // "gate" gets another component (a new build): its old entry goes, "gate-2"'s stays.
    let other = host
        .load("gate", &config("route-by-kind"))
        .expect("load the new build");
    assert_eq!(other.compiled().0, Compiled::Fresh);
    let files = entries(cache.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("gate-2-")).count(), 1);
    let gate: Vec<_> = files.iter().filter(|f| !f.starts_with("gate-2-")).collect();
    assert_eq!(gate.len(), 1, "{files:?}");
    assert_eq!(
        host.load("gate", &config("route-by-kind"))
            .unwrap()
            .compiled()
            .0,
        Compiled::Cached
    );
}

#[test]
fn an_unwritable_cache_directory_only_costs_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A file where the directory should be: nothing can be written under it.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "x").expect("write");
    let mut plugin = host(&blocked)
        .load("keep", &config("keep-all"))
        .expect("loads without a cache");
    assert_eq!(plugin.filter(&batch(1)).expect("call").output, vec![true]);
}

#[test]
fn imports_are_refused_before_compiling() {
    // The filesystem fixture without `allow_dirs`: refused by the precheck alone, with the
    // key that would grant it.
    let path = fixture("imports-fs");
    let bytes = std::fs::read(&path).expect("read");
    let err = precheck("fs", &path, &bytes, &config("imports-fs")).expect_err("refused");
    let LoadError::ImportNotGranted { imports, hints, .. } = &err else {
        panic!("expected ImportNotGranted, got {err:?}");
    };
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:filesystem/")),
        "{imports:?}"
    );
    assert!(hints.iter().any(|h| h.contains("allow_dirs")), "{err}");
    // A core module is told apart from a component.
    let core = b"\0asm\x01\0\0\0";
    let err = precheck("core", Path::new("core.wasm"), core, &config("keep-all"))
        .expect_err("a core module");
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
    // A plugin the host runs passes.
    let keep = std::fs::read(fixture("keep-all")).expect("read");
    assert!(precheck("keep", Path::new("k.wasm"), &keep, &config("keep-all")).expect("ok"));
}

#[test]
fn a_cache_directory_others_may_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).expect("mkdir");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for _ in 0..2 {
        let plugin = host(&cache)
            .load("keep", &config("keep-all"))
            .expect("loads, compiled");
        assert_eq!(plugin.compiled().0, Compiled::Fresh);
    }
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
    // A symlink to a private directory is not trusted either.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&private, &link).expect("symlink");
    host(&link).load("keep", &config("keep-all")).expect("load");
    assert!(entries(&private).is_empty());
}
