//! Where the votes come from: a traffic file (each record in turn) or a weighted random mix.

use std::path::Path;

use anyhow::Context as _;
use bandvote_core::Vote;

/// The votes a run sends, each kept with its pre-serialised JSON body.
#[derive(Debug, Clone)]
pub struct VoteSource {
    votes: Vec<VoteBody>,
    order: Order,
}

/// A vote and the JSON body that carries it.
#[derive(Debug, Clone)]
pub(crate) struct VoteBody {
    pub(crate) vote: Vote,
    pub(crate) json: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Order {
    /// Records in file order, starting again after the last.
    Sequential,
    /// Records drawn at random with these cumulative weights (same length as `votes`).
    Weighted { cumulative: Vec<u64>, seed: u64 },
}

/// The original contest's four albums with the weights of its Locust traffic file.
const ORIGINAL_MIX: [(&str, &str, &str, &str, u64); 4] = [
    ("Bohemia Suburbana", "Mis palabras", "1997", "9.5", 280),
    ("Bohemia Suburbana", "Imaginaria Sonora", "2015", "5.2", 320),
    ("Alux Nahual", "Rock chapin", "2014", "6.4", 160),
    ("Alux Nahual", "El Viaje", "2011", "8.6", 250),
];

impl VoteSource {
    /// Reads a traffic file: a JSON array of vote objects, sent in order. Every record must be a
    /// valid vote, so that a run's expected counts are exactly the accepted records.
    pub fn from_traffic_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("cannot read traffic file {}", path.display()))?;
        let records: Vec<serde_json::Value> = serde_json::from_slice(&text)
            .with_context(|| format!("traffic file {} is not a JSON array", path.display()))?;
        anyhow::ensure!(!records.is_empty(), "traffic file {} has no records", path.display());
        let votes = records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                let json = serde_json::to_vec(record)?;
                let vote = Vote::parse_json(&json)
                    .map_err(|e| anyhow::anyhow!("record {i} of {} is not a valid vote: {e}", path.display()))?;
                Ok(VoteBody { vote, json })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { votes, order: Order::Sequential })
    }

    /// The original contest's albums drawn at random with its traffic file's weights.
    pub fn original_mix(seed: u64) -> Self {
        let entries = ORIGINAL_MIX.map(|(name, album, year, rank, weight)| {
            (Vote::from_strings(name, album, year, rank).expect("the built-in mix is valid"), weight)
        });
        Self::weighted(entries.to_vec(), seed)
    }

    /// Votes drawn at random, each with its weight (> 0).
    pub fn weighted(entries: Vec<(Vote, u64)>, seed: u64) -> Self {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(entries.len());
        let mut votes = Vec::with_capacity(entries.len());
        for (vote, weight) in entries {
            total += weight.max(1);
            cumulative.push(total);
            let json = serde_json::to_vec(&vote).expect("a vote serialises");
            votes.push(VoteBody { vote, json });
        }
        Self { votes, order: Order::Weighted { cumulative, seed } }
    }

    /// Number of distinct records.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// Whether there are no records (never true for a constructed source).
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// The record at `index`.
    pub(crate) fn get(&self, index: usize) -> &VoteBody {
        &self.votes[index]
    }

    /// Whether the records are sent in order (a traffic file).
    pub fn is_sequential(&self) -> bool {
        matches!(self.order, Order::Sequential)
    }

    /// A picker that yields the record for each sequence number.
    pub(crate) fn picker(&self) -> Picker<'_> {
        let rng = match &self.order {
            Order::Sequential => fastrand::Rng::with_seed(0),
            Order::Weighted { seed, .. } => fastrand::Rng::with_seed(*seed),
        };
        Picker { source: self, next: 0, rng }
    }
}

/// Yields records one after the other.
pub(crate) struct Picker<'a> {
    source: &'a VoteSource,
    next: usize,
    rng: fastrand::Rng,
}

impl<'a> Picker<'a> {
    /// The next record to send.
    #[cfg(test)]
    pub(crate) fn next_vote(&mut self) -> &'a VoteBody {
        &self.source.votes[self.next_index()]
    }

    /// The index of the next record to send.
    pub(crate) fn next_index(&mut self) -> usize {
        let source = self.source;
        match &source.order {
            Order::Sequential => {
                let index = self.next % source.votes.len();
                self.next += 1;
                index
            }
            Order::Weighted { cumulative, .. } => {
                let total = *cumulative.last().expect("at least one entry");
                let draw = self.rng.u64(0..total);
                cumulative.partition_point(|&c| c <= draw)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mix_follows_its_weights() {
        let source = VoteSource::original_mix(7);
        let mut picker = source.picker();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..101_000 {
            *counts.entry(picker.next_vote().vote.album.clone()).or_insert(0u64) += 1;
        }
        // 101,000 draws of weights 280/320/160/250 (of 1010): each within 3% of its share.
        for (_, album, _, _, weight) in ORIGINAL_MIX {
            let expected = weight as f64 * 100.0;
            let got = counts[album] as f64;
            assert!((got - expected).abs() / expected < 0.03, "{album}: {got} vs {expected}");
        }
    }

    #[test]
    fn traffic_file_is_sent_in_order_and_wraps() {
        let dir = std::env::temp_dir().join(format!("bandvote-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("traffic.json");
        std::fs::write(
            &path,
            r#"[{"name":"A","album":"x","year":"2000","rank":"1"},{"name":"B","album":"y","year":2001,"rank":2}]"#,
        )
        .unwrap();
        let source = VoteSource::from_traffic_file(&path).unwrap();
        let mut picker = source.picker();
        let names: Vec<_> = (0..5).map(|_| picker.next_vote().vote.name.clone()).collect();
        assert_eq!(names, ["A", "B", "A", "B", "A"]);

        std::fs::write(&path, r#"[{"name":"A","album":"x","year":"20","rank":"1"}]"#).unwrap();
        let error = VoteSource::from_traffic_file(&path).unwrap_err().to_string();
        assert!(error.contains("record 0"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
