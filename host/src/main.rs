//! The `switchyard` binary: parse the command line, set up logging, run.

use clap::Parser;
use switchyard::config::{Cli, Command};

/// mimalloc: the data plane allocates small, short-lived buffers per connection and request;
/// glibc's malloc showed up at ~8% of an HTTP proxy profile. The `system-allocator` feature
/// leaves it out, so heap profilers that hook malloc (heaptrack) see every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("switchyard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Env(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(switchyard::env_cli::env(args)),
        Command::Exec(args) => {
            let code = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(switchyard::env_cli::exec(args))?;
            std::process::exit(code)
        }
        Command::Plugin(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(switchyard::plugin_cli::run(args)),
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let settings = args.resolve()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(switchyard::serve::run(settings))
        }
    }
}
