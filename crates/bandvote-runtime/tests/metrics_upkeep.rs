//! The Prometheus recorder keeps every histogram sample until it is folded into buckets. A service
//! that nobody scrapes must not keep them: its memory would grow with every vote for as long as it
//! runs. Its own test binary, so that no other test's allocations share the process.

use std::time::Duration;

use bandvote_runtime::metrics::{UPKEEP_INTERVAL, install};

/// Resident memory of this process, from /proc/self/statm.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm is readable");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("statm has a resident field");
    pages * 4096
}

#[test]
fn histogram_samples_recorded_without_a_scrape_are_folded_away() {
    install();
    // 2.4 M samples of 24 bytes each: ~58 MB if they were all kept. Recorded over 6 upkeep
    // intervals, so that each upkeep folds about a sixth of them.
    const BATCHES: u32 = 24;
    const PER_BATCH: u32 = 100_000;
    let pause = UPKEEP_INTERVAL * 6 / BATCHES;
    let before = resident_bytes();
    for _ in 0..BATCHES {
        for _ in 0..PER_BATCH {
            metrics::histogram!("bandvote_upkeep_test_seconds").record(0.001);
        }
        std::thread::sleep(pause);
    }
    std::thread::sleep(UPKEEP_INTERVAL + Duration::from_millis(500));
    let grown = resident_bytes().saturating_sub(before);
    let kept_if_never_folded = u64::from(BATCHES * PER_BATCH) * 24;
    eprintln!(
        "resident memory grew by {} KB ({} KB if every sample were kept)",
        grown >> 10,
        kept_if_never_folded >> 10
    );
    assert!(
        grown < kept_if_never_folded / 2,
        "resident memory grew by {} MB while recording {} samples ({} MB if every sample were kept)",
        grown >> 20,
        BATCHES * PER_BATCH,
        kept_if_never_folded >> 20
    );
    // The samples were folded, not lost: the scrape counts every one.
    let page = install().render();
    let count = page
        .lines()
        .find(|line| line.starts_with("bandvote_upkeep_test_seconds_count"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(count, Some(u64::from(BATCHES * PER_BATCH)), "the histogram's count on /metrics:\n{page}");
}
