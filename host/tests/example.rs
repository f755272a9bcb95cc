//! The embedding example (`examples/embed.rs`) runs as a user would run it: a component
//! from a file, a data directory, replies printed; a second run recovers and goes on.
//!
//! `cargo test` builds examples beside the test binaries (`target/<profile>/examples`).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    profile.join("examples").join(name)
}

#[test]
fn the_embedding_example_commits_and_recovers() {
    let root = std::env::temp_dir().join(format!("carapace-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let component = root.join("echo.wasm");
    std::fs::write(&component, carapace::machines::ECHO_COMPONENT).unwrap();
    let data = root.join("data");
    let run = || {
        let output = Command::new(example("embed"))
            .args([&component, &data])
            .output()
            .expect("the example was built by `cargo test`");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("recovered at op 0"), "{first}");
    assert!(first.contains("op 1 reply hello"), "{first}");
    assert!(first.contains("op 3 reply world"), "{first}");
    let second = run();
    assert!(
        second.contains("recovered at op 3 (3 ops replayed)"),
        "{second}"
    );
    assert!(second.contains("op 6 reply world"), "{second}");
    // Bad input: a missing argument is an error, not a panic.
    let output = Command::new(example("embed")).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: embed"));
    std::fs::remove_dir_all(&root).unwrap();
}
