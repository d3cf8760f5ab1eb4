//! [`Counts`]: the `{total, bands, albums}` shape of every tally in the system: the counters (Redis,
//! the embedded database), the log counted by `recount` and `audit`, `/api/results`, and what a load
//! run sent and verifies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Votes in all, per band and per album (`<band> / <album>`, see [`crate::vote::album_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Votes in all.
    pub total: u64,
    /// Band → votes.
    pub bands: BTreeMap<String, u64>,
    /// `<band> / <album>` → votes.
    pub albums: BTreeMap<String, u64>,
}

impl Counts {
    /// Counts one vote for `band`'s `album`.
    pub fn add(&mut self, band: &str, album: &str) {
        self.total += 1;
        *self.bands.entry(band.to_owned()).or_default() += 1;
        *self.albums.entry(crate::vote::album_key(band, album)).or_default() += 1;
    }

    /// Leaves `other`'s votes out (a count never goes below zero; a band or album left with none is
    /// removed), so that counts read after these can only take out more than they added.
    pub fn subtract(&mut self, other: &Counts) {
        self.total = self.total.saturating_sub(other.total);
        for (mine, theirs) in [(&mut self.bands, &other.bands), (&mut self.albums, &other.albums)] {
            for (key, n) in theirs {
                if let Some(count) = mine.get_mut(key) {
                    *count = count.saturating_sub(*n);
                    if *count == 0 {
                        mine.remove(key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn a_vote_counts_in_the_total_its_band_and_its_album() {
        let mut counts = Counts::default();
        counts.add("A", "x");
        counts.add("A", "y");
        assert_eq!(counts.total, 2);
        assert_eq!(counts.bands["A"], 2);
        assert_eq!(counts.albums["A / y"], 1);
        let mut hidden = Counts::default();
        hidden.add("A", "y");
        hidden.add("A", "y");
        hidden.add("B", "z");
        let mut public = counts.clone();
        public.subtract(&hidden);
        // Counts read later may hold more of the hidden votes: nothing goes below zero or lingers.
        assert_eq!(public.total, 0);
        assert!(public.bands.is_empty(), "{:?}", public.bands);
        assert_eq!(public.albums, [("A / x".to_owned(), 1)].into());
        assert_eq!(
            serde_json::to_value(&counts).expect("serialises"),
            serde_json::json!({"total": 2, "bands": {"A": 2}, "albums": {"A / x": 1, "A / y": 1}})
        );
    }
}
