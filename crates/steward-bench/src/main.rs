//! `steward-bench`: prints the issue-5 figures measured on this machine (see docs/BENCHMARKS.md
//! for the reference run and what each figure means).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use steward_bench::{
    BenchOptions, CheckinOptions, ConnMode, ProfilesOptions, StormOptions, checkins, profiles, run, serve_child, storm,
};

#[derive(Parser, Debug)]
#[command(name = "steward-bench", about = "Steward performance figures (127.0.0.1 only)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Seconds per CPU-only figure (signing, codec).
    #[arg(long, default_value_t = 2.0)]
    cpu_seconds: f64,
    /// Directory with the Windows captures 04-session1-msg1 and 05-session2-unenroll.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Items in the generated large SyncML message.
    #[arg(long, default_value_t = 2_000)]
    large_items: usize,
    /// Devices enrolled over the wire for the enrollment figure.
    #[arg(long, default_value_t = 1_000)]
    enroll_devices: usize,
    /// Devices used for the session figures.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Sessions per session figure (whole rounds over --devices).
    #[arg(long, default_value_t = 4_000)]
    sessions: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Devices written through the store for the store-size, fan-out and RSS figures.
    #[arg(long, default_value_t = 10_000)]
    store_devices: usize,
    /// Devices that enroll and check in against the child server before its RSS is read.
    #[arg(long, default_value_t = 100)]
    child_active_devices: usize,
    /// Skip the child-process RSS figure.
    #[arg(long)]
    no_rss: bool,
    /// Also print the figures as a Markdown table.
    #[arg(long, global = true)]
    markdown: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Only the idle check-in (enroll, warm up, then --sessions check-ins in one connection mode):
    /// small enough to run under callgrind or perf when comparing one change of the hot path.
    Checkins {
        #[arg(long, default_value_t = 100)]
        devices: usize,
        #[arg(long, default_value_t = 2_000)]
        sessions: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, value_enum, default_value = "reused")]
        mode: ConnMode,
        /// Also measure the bare hyper+rustls baseline the same way.
        #[arg(long)]
        bare: bool,
        /// Under `valgrind --tool=callgrind`: zero the counters before the measured sessions and
        /// dump them after, so the profile holds only those sessions.
        #[arg(long)]
        callgrind: bool,
        /// Then measure the same check-ins over TLS 1.2 only (Windows 10's Schannel) and print the
        /// ratio to the TLS 1.3 figure (Windows 11).
        #[arg(long)]
        tls12: bool,
        /// Run the server on PostgreSQL (`postgres://user@host:port/db`): a fresh database is
        /// created on that server for the run and dropped after it. Default: SQLite.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Policy storm: enroll --devices, warm them up, assign one profile (--commands Replace commands
    /// each) to all of them at once, then let every device check in; prints the time until the last
    /// acknowledgement and the per-device check-in-to-acknowledgement latency.
    Storm {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 5)]
        commands: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// 0: all devices check in at once (as fast as --concurrency allows); otherwise device i
        /// starts i × SPREAD / devices seconds after the assignment (a compressed poll schedule).
        #[arg(long, default_value_t = 0.0)]
        spread_seconds: f64,
    },
    /// Desired-state configuration (issue 12): the catalog's ready-to-assign profiles applied to
    /// all of --store-devices enrollments (apply time, store bytes), --reconcile-devices of them
    /// reconciled through the check-in commit path (bytes per device), then over the wire the idle
    /// check-in of devices with every setting settled against devices with none (measured
    /// alternately in one run), a new profile version's rollout through a pilot ring of the
    /// configured devices to 100 % acknowledged, and the same for a ring of --ring-devices devices
    /// through the store's check-in path.
    Profiles {
        /// Enrollments written through the store for the assignment figure (0: skip it).
        #[arg(long, default_value_t = 100_000)]
        store_devices: usize,
        /// Of those, devices reconciled through the check-in commit path.
        #[arg(long, default_value_t = 2_000)]
        reconcile_devices: usize,
        /// Devices enrolled over the wire for the idle check-in and new-version figures (0: skip).
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Sessions per idle check-in measurement (whole rounds over --devices).
        #[arg(long, default_value_t = 2_000)]
        sessions: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, value_enum, default_value = "reused")]
        mode: ConnMode,
        /// Run the wire and ring figures on PostgreSQL (as `checkins --database-url`); the
        /// assignment figure always measures a SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Devices of the pilot ring a new profile version rolls out through, reconciled through
        /// the store's check-in path (0: skip).
        #[arg(long, default_value_t = 10_000)]
        ring_devices: usize,
        /// The ring's devices get only the rolled-out profile, not the whole catalog.
        #[arg(long)]
        ring_one_profile: bool,
        /// On PostgreSQL, VACUUM (ANALYZE) the run's database before every idle measurement (as
        /// autovacuum would; this machine's cluster runs with autovacuum off).
        #[arg(long)]
        vacuum: bool,
    },
    /// Internal: run a server on DATA_DIR on 127.0.0.1 until stdin closes (the RSS figure).
    #[command(hide = true)]
    ServeChild {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// The allocator of the `steward` binary, so that in-process figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::ServeChild { data_dir }) = &cli.command {
        return match serve_child(data_dir).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve-child: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Checkins {
        devices,
        sessions,
        concurrency,
        mode,
        bare,
        callgrind,
        tls12,
        database_url,
    }) = &cli.command
    {
        let opts = CheckinOptions {
            devices: *devices,
            sessions: *sessions,
            concurrency: *concurrency,
            mode: *mode,
            bare: *bare,
            callgrind: *callgrind,
            tls12: *tls12,
            database_url: database_url.clone(),
        };
        return finish(checkins(&opts).await, cli.markdown);
    }
    if let Some(Cmd::Storm {
        devices,
        commands,
        concurrency,
        spread_seconds,
    }) = &cli.command
    {
        let opts = StormOptions {
            devices: *devices,
            commands: *commands,
            concurrency: *concurrency,
            spread_seconds: *spread_seconds,
        };
        return finish(storm(&opts).await, cli.markdown);
    }
    if let Some(Cmd::Profiles {
        store_devices,
        reconcile_devices,
        devices,
        sessions,
        concurrency,
        mode,
        database_url,
        ring_devices,
        ring_one_profile,
        vacuum,
    }) = &cli.command
    {
        let opts = ProfilesOptions {
            store_devices: *store_devices,
            reconcile_devices: *reconcile_devices,
            devices: *devices,
            sessions: *sessions,
            concurrency: *concurrency,
            mode: *mode,
            database_url: database_url.clone(),
            ring_devices: *ring_devices,
            ring_one_profile: *ring_one_profile,
            vacuum: *vacuum,
        };
        return finish(profiles(&opts).await, cli.markdown);
    }
    let opts = BenchOptions {
        cpu_seconds: cli.cpu_seconds,
        fixtures: cli.fixtures,
        large_items: cli.large_items,
        enroll_devices: cli.enroll_devices,
        devices: cli.devices,
        sessions: cli.sessions,
        concurrency: cli.concurrency,
        store_devices: cli.store_devices,
        child_exe: if cli.no_rss { None } else { std::env::current_exe().ok() },
        child_active_devices: cli.child_active_devices,
    };
    finish(run(&opts).await, cli.markdown)
}

fn finish(result: Result<steward_bench::Report, steward_bench::BenchError>, markdown: bool) -> std::process::ExitCode {
    match result {
        Ok(report) => {
            if markdown {
                println!("{}", report.to_markdown());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("steward-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
