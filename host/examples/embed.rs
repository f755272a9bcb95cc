//! Embedding carapace: load a state machine component from a file, open (or create) a
//! data directory, commit a few requests and print their replies, through the library
//! alone. Run it twice: the second run recovers the directory and goes on.
//!
//! ```sh
//! cargo run -p carapace --example embed -- COMPONENT.wasm DATA_DIR
//! ```

use std::path::PathBuf;

use carapace::durable::Durable;
use carapace::imports::IoOrder;
use carapace::machines::{default_options, read_component};
use carapace::replica::Request;
use carapace::wasm::{Limits, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(component), Some(data)) = (args.next(), args.next()) else {
        return Err("usage: embed COMPONENT.wasm DATA_DIR".into());
    };
    // Compile once; every instance (recovery's, then the replica's) comes from it.
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime.load(&read_component(&PathBuf::from(component))?)?;
    let dir = carapace::os::open_data_dir(&PathBuf::from(data))?;
    let options = carapace::Options {
        checkpoint_interval_ops: 32,
        ..default_options()
    };
    let (mut durable, recovery) = Durable::open(dir, Some(options), IoOrder::Fifo, |imports| {
        Ok(Box::new(runtime.instantiate(&component, imports)?))
    })?;
    let identity = durable.replica().identity().clone();
    println!(
        "machine {identity}, recovered at op {} ({} ops replayed)",
        durable.replica().op(),
        recovery.replayed_ops
    );
    for text in ["hello", "deterministic", "world"] {
        let request = Request {
            client: 1,
            op: durable.replica().op() + 1,
            timestamp: durable.replica().timestamp() + 1,
            // The echo machine's `echo` operation; another machine has its own.
            operation: 1,
            body: text.as_bytes().to_vec(),
        };
        // When `commit` returns, the op is journaled and synced: acknowledged.
        let reply = durable.commit(&request)?;
        println!(
            "op {} reply {}",
            request.op,
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}
