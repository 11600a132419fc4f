//! `cortex`: inspect a Cortex cluster and talk to its actors from the shell.
//!
//! Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 unreachable, 4 timeout.
//! Run `cortex --help` for the commands.

use std::process::ExitCode;

use cortex_client::cli;

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os()) {
        Ok(a) => a,
        Err((text, code)) => {
            if code == cli::EXIT_OK {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            return ExitCode::from(code);
        }
    };
    // Logs go to stderr, quiet unless RUST_LOG asks for more.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    cortex_transport::tls::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cortex: error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    ExitCode::from(rt.block_on(cli::run(args)))
}
