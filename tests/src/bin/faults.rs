//! `sluice-faults [ROWS] [ROUNDS] [KILLS]`: every fault scenario of tests/src/chaos.rs at
//! the given size, then the table (bench/faults.sh runs it after infra/services.sh).

use sluice_tests::chaos::{self, Scale};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<usize>()
            .unwrap_or_else(|_| panic!("usage: sluice-faults [ROWS] [ROUNDS] [KILLS], got {a:?}"))
    });
    let test = Scale::TEST;
    let scale = Scale {
        rows: args.next().unwrap_or(test.rows),
        rounds: args.next().unwrap_or(test.rounds),
        kills: args.next().unwrap_or(test.kills),
    };
    eprintln!("fault scenarios at {scale:?}");
    let outcomes = chaos::all(scale).await;
    for outcome in &outcomes {
        eprintln!("{}: {}", outcome.scenario, outcome.detail);
        for reason in &outcome.reasons {
            eprintln!("  a run failed: {reason}");
        }
    }
    print!("{}", chaos::table(&outcomes));
    let clean = outcomes
        .iter()
        .all(|o| o.diff == chaos::Diff::default() && o.unclear.is_empty());
    std::process::exit(if clean { 0 } else { 1 });
}
