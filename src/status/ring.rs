//! A fixed-size ring: keeps the newest `capacity` values, dropping the oldest. It allocates
//! once, when built.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Ring<T> {
    values: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        Ring {
            values: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, value: T) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn latest(&self) -> Option<&T> {
        self.values.back()
    }

    /// The value pushed `n` pushes before the latest (`back(0)` is the latest); the oldest
    /// held when there are fewer.
    pub fn back_or_oldest(&self, n: usize) -> Option<&T> {
        let len = self.values.len();
        (len > 0).then(|| &self.values[len - 1 - n.min(len - 1)])
    }

    /// The newest `n` values (fewer if fewer are held), oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = &T> {
        self.values.iter().skip(self.values.len().saturating_sub(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_capacity() {
        let mut r = Ring::new(3);
        assert!(r.is_empty());
        assert_eq!(r.back_or_oldest(5), None);
        for i in 1..=5 {
            r.push(i);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.capacity(), 3);
        assert_eq!(r.latest(), Some(&5));
        assert_eq!(r.back_or_oldest(0), Some(&5));
        assert_eq!(r.back_or_oldest(2), Some(&3));
        assert_eq!(r.back_or_oldest(100), Some(&3), "the oldest held");
        assert_eq!(r.last(2).copied().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(r.last(9).copied().collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let mut r = Ring::new(900);
        for i in 0..10_000 {
            r.push(i);
        }
        assert_eq!(r.len(), 900);
        assert!(r.values.capacity() < 2 * 900);
        assert_eq!(r.back_or_oldest(899), Some(&9100));
    }
}
