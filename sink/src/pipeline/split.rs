//! Finding the rows ClickHouse refuses: bisection of a rejected insert, as pure logic.
//!
//! A [`Split`] starts from a range of rows that ClickHouse refused for their data and hands
//! out sub-ranges to insert, depth first, left to right: a range that fails is halved, a
//! range that succeeds is done, a single row that fails is *rejected*. The caller inserts
//! each range and reports the outcome; nothing here does I/O. With `k` refused rows among
//! `n` this takes at most `2·k·⌈log2 n⌉` inserts (each of the `⌈log2 n⌉` levels tries at
//! most two halves of each of the ≤ `k` failing ranges above it).
//!
//! When more than `limit` rows are refused the split stops ([`Split::over_limit`]): so many
//! bad rows mean the request is wrong rather than the rows (a schema change that makes every
//! value "unparsable"), and parking them would divert the data. The caller then treats the
//! rejection as systemic.

use std::ops::Range;

/// The state of one bisection. `E` is the error each rejected row carries.
#[derive(Debug)]
pub(crate) struct Split<E> {
    /// Ranges still to insert; the next is at the end.
    pending: Vec<Range<usize>>,
    rejected: Vec<(usize, E)>,
    limit: usize,
}

impl<E> Split<E> {
    /// A split of `rows`, which ClickHouse just refused with `error`.
    pub(crate) fn new(rows: Range<usize>, error: E, limit: usize) -> Split<E> {
        let mut s = Split {
            pending: Vec::new(),
            rejected: Vec::new(),
            limit,
        };
        s.refused(rows, error);
        s
    }

    /// The next range to insert; `None` when every row is accounted for or the limit is
    /// passed.
    pub(crate) fn next(&mut self) -> Option<Range<usize>> {
        if self.over_limit() {
            return None;
        }
        self.pending.pop()
    }

    /// `rows` (handed out by [`Split::next`]) was refused with `error`.
    pub(crate) fn refused(&mut self, rows: Range<usize>, error: E) {
        match rows.len() {
            0 => {}
            1 => self.rejected.push((rows.start, error)),
            n => {
                let mid = rows.start + n / 2;
                // Left half on top: rows are tried in order.
                self.pending.push(mid..rows.end);
                self.pending.push(rows.start..mid);
            }
        }
    }

    /// More rows refused than the limit allows.
    pub(crate) fn over_limit(&self) -> bool {
        self.rejected.len() > self.limit
    }

    /// The refused rows, in order, each with its error.
    pub(crate) fn into_rejected(self) -> Vec<(usize, E)> {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Runs a split of `0..n` against a fake ClickHouse that refuses any insert containing a
    /// row of `bad`; returns the rejected rows, the rows written, and the number of inserts
    /// (the first, whole one included).
    fn run(n: usize, bad: &BTreeSet<usize>, limit: usize) -> (Vec<usize>, Vec<usize>, usize) {
        let refuses = |r: &Range<usize>| bad.range(r.clone()).next().is_some();
        let mut inserts = 1;
        let mut written = Vec::new();
        if !refuses(&(0..n)) {
            return (Vec::new(), (0..n).collect(), inserts);
        }
        let mut split = Split::new(0..n, (), limit);
        while let Some(r) = split.next() {
            inserts += 1;
            if refuses(&r) {
                split.refused(r, ());
            } else {
                written.extend(r);
            }
        }
        let over = split.over_limit();
        let rejected: Vec<usize> = split.into_rejected().into_iter().map(|e| e.0).collect();
        if !over {
            written.sort_unstable();
        }
        (rejected, written, inserts)
    }

    fn log2_ceil(n: usize) -> usize {
        n.next_power_of_two().trailing_zeros() as usize
    }

    #[test]
    fn one_bad_row_costs_two_inserts_per_level() {
        let bad = BTreeSet::from([700]);
        let (rejected, written, inserts) = run(1024, &bad, 100);
        assert_eq!(rejected, vec![700]);
        assert_eq!(written.len(), 1023);
        assert!(!written.contains(&700));
        // The whole batch, then two halves on each of the 10 levels.
        assert_eq!(inserts, 1 + 2 * 10);
        // A single row that fails is rejected at once; a clean batch is one insert.
        assert_eq!(run(1, &BTreeSet::from([0]), 100), (vec![0], vec![], 1));
        assert_eq!(run(5, &BTreeSet::new(), 100).2, 1);
    }

    #[test]
    fn too_many_refused_rows_stop_the_split() {
        let all: BTreeSet<usize> = (0..10_000).collect();
        let (rejected, _, inserts) = run(10_000, &all, 8);
        // Stops at the limit's first excess, after about two inserts per refused row.
        assert_eq!(rejected.len(), 9);
        assert!(inserts <= 1 + 2 * 9 + log2_ceil(10_000), "{inserts}");
    }

    proptest! {
        /// Every row is either written once or rejected, never both; the rejected are exactly
        /// the bad ones; O(k log n) inserts.
        #[test]
        fn rows_are_written_or_rejected_once(
            n in 1usize..3000,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let bad: BTreeSet<usize> = picks.iter().map(|i| i.index(n)).collect();
            let (rejected, written, inserts) = run(n, &bad, 100);
            prop_assert_eq!(&rejected, &bad.iter().copied().collect::<Vec<_>>());
            let mut all: Vec<usize> = written.iter().chain(&rejected).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            let k = bad.len().max(1);
            prop_assert!(inserts <= 1 + 2 * k * log2_ceil(n).max(1), "{} inserts", inserts);
        }
    }
}
