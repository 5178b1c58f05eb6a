//! One watch's objects, as small values under their keys, kept the way a reflector store keeps
//! them: changed by each event, and replaced whole when a (re-)list completes, so that a list in
//! progress never shows half a cluster. Unlike a store it reports what changed, so a re-list
//! after a watch gap still tells the controller which objects appeared, changed or went away
//! meanwhile.

use std::collections::BTreeMap;

/// The values of one watch by key.
#[derive(Debug)]
pub struct Relisted<K, V> {
    current: BTreeMap<K, V>,
    building: Option<BTreeMap<K, V>>,
    listed: bool,
}

impl<K, V> Default for Relisted<K, V> {
    fn default() -> Self {
        Self {
            current: BTreeMap::new(),
            building: None,
            listed: false,
        }
    }
}

/// A key whose value changed: before and after (`None`: absent).
pub type Change<K, V> = (K, Option<V>, Option<V>);

impl<K: Ord + Clone, V: Clone + PartialEq> Relisted<K, V> {
    /// Whether a first list has completed.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// An object was added, changed (`Some`) or deleted (`None`): the value it had before.
    pub fn apply(&mut self, key: K, value: Option<V>) -> Option<V> {
        match value {
            Some(value) => self.current.insert(key, value),
            None => self.current.remove(&key),
        }
    }

    /// A (re-)list starts.
    pub fn init(&mut self) {
        self.building = Some(BTreeMap::new());
    }

    /// An object of the list in progress (`None`: listed, but nothing worth keeping).
    pub fn init_apply(&mut self, key: K, value: Option<V>) {
        let building = self.building.get_or_insert_with(BTreeMap::new);
        if let Some(value) = value {
            building.insert(key, value);
        }
    }

    /// The list is complete: it replaces what was kept, and every key whose value differs is
    /// returned.
    pub fn init_done(&mut self) -> Vec<Change<K, V>> {
        let Some(new) = self.building.take() else {
            self.listed = true;
            return Vec::new();
        };
        let old = std::mem::replace(&mut self.current, new);
        self.listed = true;
        let mut changes: Vec<Change<K, V>> = Vec::new();
        for (key, before) in &old {
            let after = self.current.get(key);
            if after != Some(before) {
                changes.push((key.clone(), Some(before.clone()), after.cloned()));
            }
        }
        for (key, after) in &self.current {
            if !old.contains_key(key) {
                changes.push((key.clone(), None, Some(after.clone())));
            }
        }
        changes
    }

    /// Forgets that a list completed (the watch restarts) while keeping the values.
    pub fn unlist(&mut self) {
        self.listed = false;
        self.building = None;
    }

    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key)
    }

    /// The values whose keys lie in `range`.
    pub fn range<R: std::ops::RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (&K, &V)> {
        self.current.range(range)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.current.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relist_replaces_the_values_only_when_complete_and_reports_the_difference() {
        let mut kept: Relisted<String, u8> = Relisted::default();
        assert!(!kept.listed());
        kept.init();
        kept.init_apply("a".into(), Some(1));
        kept.init_apply("b".into(), Some(2));
        kept.init_apply("ignored".into(), None);
        assert_eq!(kept.get(&"a".into()), None, "half a list is never shown");
        let first = kept.init_done();
        assert!(kept.listed());
        assert_eq!(first.len(), 2);
        assert_eq!(kept.apply("c".into(), Some(3)), None);
        assert_eq!(kept.apply("a".into(), None), Some(1));
        // A watch gap: b changed, c went away, d appeared.
        kept.init();
        kept.init_apply("b".into(), Some(20));
        kept.init_apply("d".into(), Some(4));
        assert_eq!(kept.get(&"c".into()), Some(&3));
        let changes = kept.init_done();
        assert_eq!(
            changes,
            [
                ("b".to_owned(), Some(2), Some(20)),
                ("c".to_owned(), Some(3), None),
                ("d".to_owned(), None, Some(4)),
            ]
        );
        assert_eq!(kept.values().copied().collect::<Vec<_>>(), [20, 4]);
        kept.unlist();
        assert!(!kept.listed());
        assert_eq!(kept.get(&"d".into()), Some(&4));
    }
}
