//! The command line: bad arguments give clear errors; good ones run.

use carapace::cli::Cli;
use clap::Parser;

fn run(args: &[&str]) -> Result<(), String> {
    let cli =
        Cli::try_parse_from(["carapace"].iter().chain(args)).map_err(|error| error.to_string())?;
    cli.execute().map_err(|error| format!("{error:#}"))
}

fn error_of(args: &[&str]) -> String {
    run(args).unwrap_err()
}

#[test]
fn a_small_run_succeeds_on_both_targets() {
    run(&["run", "--ops", "64", "--checkpoint-interval", "32"]).unwrap();
    run(&["run", "--ops", "64", "--target", "native"]).unwrap();
    run(&["bench", "--ops", "64", "--checkpoint-interval", "32"]).unwrap();
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let error = error_of(&["run", "--setting", "bar-ops"]);
    assert!(
        error.contains("setting `bar-ops` is not of the form NAME=VALUE"),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "8", "--setting", "bar-ops=3"]);
    assert!(
        error.contains("setting `bar-ops`: 3 is not a power of two"),
        "{error}"
    );
    let error = error_of(&["run", "--module", "/no/such/module.wasm"]);
    assert!(error.contains("reading `/no/such/module.wasm`"), "{error}");
    let error = error_of(&["run", "--target", "native", "--module", "x.wasm"]);
    assert!(error.contains("drop `--module`"), "{error}");
    let error = error_of(&["run", "--ops", "8", "--checkpoint-interval", "0"]);
    assert!(
        error.contains("checkpoint interval must be at least one op"),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "8", "--checkpoint-interval", "6"]);
    assert!(
        error.contains(
            "checkpoint interval of 6 ops is not a positive multiple of the bar of 32 ops"
        ),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "many"]);
    assert!(error.contains("invalid value 'many'"), "{error}");
    let error = error_of(&["fly"]);
    assert!(error.contains("unrecognized subcommand 'fly'"), "{error}");
}

#[test]
fn a_module_that_is_not_a_component_is_refused() {
    let path = std::env::temp_dir().join(format!(
        "carapace-not-a-component-{}.wasm",
        std::process::id()
    ));
    std::fs::write(&path, b"\0asm garbage").unwrap();
    let error = error_of(&["run", "--module", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(error.contains("compiling the component"), "{error}");
}
