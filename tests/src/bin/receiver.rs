//! `sluice-receiver WRITE_KEY`: the tests' Segment-compatible receiver as a process, for
//! the delivery benchmark (bench/deliver.sh). Prints its address, then serves until
//! killed; on stdin's end it prints how many calls it took, by messageId.

use std::io::Read;

use sluice_tests::receiver::Receiver;

#[tokio::main]
async fn main() {
    let key = std::env::args().nth(1).expect("usage: sluice-receiver WRITE_KEY");
    let receiver = Receiver::start(&key).await;
    println!("{}", receiver.base_url());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    let counts = receiver.by_message_id();
    let duplicates = counts.values().filter(|n| **n > 1).count();
    println!(
        "calls {} distinct {} duplicated {duplicates}",
        receiver.calls().len(),
        counts.len()
    );
}
