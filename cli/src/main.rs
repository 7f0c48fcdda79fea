//! `whouses`: the CLI. Exit codes: 0 unused/ok, 1 in use, 3 unknown, 2 error.

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whouses: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    whouses_plumbing::logging::init(whouses_plumbing::LogFormat::Text, "error");
    let code = runtime.block_on(whouses_cli::run_args(std::env::args_os()));
    std::process::exit(code as i32);
}
