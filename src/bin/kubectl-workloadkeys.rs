//! `kubectl workloadkeys`: the kubectl plugin (see `workload_key_operator::plugin` and docs/operations.md).

use std::process::ExitCode;

use clap::Parser;
use workload_key_operator::plugin::{Cli, execute};

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's code), as the plugin's API errors do.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(execute(cli))
}
