//! `chatd-check`: load and audit running nodes (see [`chatd_client::check`]).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chatd_client::check::{CheckConfig, run};
use chatd_protocol::DEV_SECRET;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "chatd-check",
    version,
    about = "Load and audit running chatd nodes: simulated users chat for a while (with the \
             SDK's rules), then every client is checked against the store. Exits 1 on any \
             lost, duplicated or misordered message."
)]
struct CheckArgs {
    /// Node URLs, comma separated; users are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Simulated users.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Group rooms (users are dealt into them).
    #[arg(long, default_value_t = 3)]
    groups: usize,
    /// Direct (1:1) rooms.
    #[arg(long, default_value_t = 3)]
    directs: usize,
    /// Messages per second, all users together.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long to send, e.g. 30s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After sending, how long clients may take to receive everything.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The nodes' HS256 secret (default: the development secret).
    #[arg(long, env = "CHATD_CHECK_SECRET")]
    secret: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = CheckArgs::parse();
    let secret = args.secret.unwrap_or_else(|| DEV_SECRET.to_owned());
    let mut config = CheckConfig::new(args.url, secret);
    config.users = args.users;
    config.groups = args.groups;
    config.directs = args.directs;
    config.rate = args.rate;
    config.duration = args.duration;
    config.settle = args.settle;
    config.progress = !args.quiet;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let report = match runtime.block_on(run(&config, async {})) {
        Ok((report, ())) => report,
        Err(e) => {
            eprintln!("chatd-check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
    if let Some(path) = args.json
        && let Err(e) = std::fs::write(&path, &json)
    {
        eprintln!("chatd-check: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}", report.summary());
    for example in &report.audit.examples {
        println!("  {example}");
    }
    for failure in &report.incomplete {
        println!("  incomplete: {failure}");
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
