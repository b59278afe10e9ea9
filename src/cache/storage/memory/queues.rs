//! A shard's two S3-FIFO queues (see [`shard`](super::shard)) in one structure that grows
//! without pausing.
//!
//! Each queue was an `lru::LruCache` used as an ordered map. Its index is a hash table that
//! doubles as the shard fills, rehashing every entry, each through a pointer to its node,
//! under the shard's lock: 4.5-5.9 ms at about 57,000 entries a shard, the shards within a
//! few thousand inserts of each other, and every request of the worker waits it out
//! (benches/README.md). Here:
//! - nodes live in a slab of fixed-size chunks: growing adds a chunk and moves nothing, and
//!   a removed node's slot is reused by the next insert;
//! - each queue is a doubly linked list through the nodes, by slot number;
//! - one index serves both queues (a lookup is one probe, where the main queue and then the
//!   small queue took two), split into [`TABLES`] tables by bits of the key, so a table
//!   doubles alone with a [`TABLES`]th of the shard's entries; an index slot holds 64 bits
//!   of its key, so a doubling rehashes without reading a node.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Entry, Key};

/// No node: the end of a list.
const NIL: u32 = u32::MAX;
/// Nodes per slab chunk: what a shard holds beyond its entries is at most one chunk's
/// worth of unused slots (plus slots freed by removals, which the next inserts reuse).
const CHUNK: usize = 256;
/// Index tables per shard.
const TABLES: usize = 64;

/// One of a shard's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    Small = 0,
    Main = 1,
}

/// Which end of a queue an entry joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The newest end: the last to leave.
    Newest,
    /// The oldest end: the next to leave.
    Oldest,
}

struct Node {
    key: Key,
    entry: Entry,
    queue: Queue,
    newer: u32,
    older: u32,
}

/// An index slot: bits of the key (the table hashes these, and compares them before it
/// reads the node for the whole key) and the node's slot.
#[derive(Clone, Copy)]
struct Indexed {
    tag: u64,
    slot: u32,
}

#[derive(Clone, Copy)]
struct List {
    newest: u32,
    oldest: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        newest: NIL,
        oldest: NIL,
        len: 0,
    };
}

pub(super) struct Queues {
    chunks: Vec<Vec<Option<Node>>>,
    free: Vec<u32>,
    tables: Box<[HashTable<Indexed>]>,
    hasher: DefaultHashBuilder,
    lists: [List; 2],
}

/// Keys are hashes already (see `key_of`): their bits are uniform. The shard is chosen by
/// the lowest bits and the ghost list keeps the highest 32; the table is chosen by bits
/// 8-13 and the tag is bits 32-95.
fn table_of(key: Key) -> usize {
    (key >> 8) as usize % TABLES
}

fn tag_of(key: Key) -> u64 {
    (key >> 32) as u64
}

fn node(chunks: &[Vec<Option<Node>>], slot: u32) -> &Node {
    let slot = slot as usize;
    chunks[slot / CHUNK][slot % CHUNK]
        .as_ref()
        .expect("a linked slot holds a node")
}

fn node_mut(chunks: &mut [Vec<Option<Node>>], slot: u32) -> &mut Node {
    let slot = slot as usize;
    chunks[slot / CHUNK][slot % CHUNK]
        .as_mut()
        .expect("a linked slot holds a node")
}

impl Queues {
    pub(super) fn new() -> Self {
        Queues {
            chunks: Vec::new(),
            free: Vec::new(),
            tables: (0..TABLES).map(|_| HashTable::new()).collect(),
            hasher: DefaultHashBuilder::default(),
            lists: [List::EMPTY; 2],
        }
    }

    pub(super) fn len(&self, queue: Queue) -> usize {
        self.lists[queue as usize].len
    }

    pub(super) fn is_empty(&self, queue: Queue) -> bool {
        self.len(queue) == 0
    }

    fn find(&self, key: Key) -> Option<u32> {
        let tag = tag_of(key);
        let chunks = &self.chunks;
        self.tables[table_of(key)]
            .find(self.hasher.hash_one(tag), |i| {
                i.tag == tag && node(chunks, i.slot).key == key
            })
            .map(|i| i.slot)
    }

    /// The entry under `key` and the queue it is in.
    pub(super) fn get(&self, key: Key) -> Option<(Queue, &Entry)> {
        let n = node(&self.chunks, self.find(key)?);
        Some((n.queue, &n.entry))
    }

    pub(super) fn get_mut(&mut self, key: Key) -> Option<(Queue, &mut Entry)> {
        let slot = self.find(key)?;
        let n = node_mut(&mut self.chunks, slot);
        Some((n.queue, &mut n.entry))
    }

    /// Stores `entry` under `key`, which has none, at `end` of `queue`.
    pub(super) fn push(&mut self, key: Key, entry: Entry, queue: Queue, end: End) {
        let node = Node {
            key,
            entry,
            queue,
            newer: NIL,
            older: NIL,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let slot_at = slot as usize;
                self.chunks[slot_at / CHUNK][slot_at % CHUNK] = Some(node);
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let chunk = self.chunks.len() - 1;
                let last = &mut self.chunks[chunk];
                last.push(Some(node));
                u32::try_from(chunk * CHUNK + last.len() - 1)
                    .ok()
                    .filter(|slot| *slot != NIL)
                    .expect("fewer than 2^32 - 1 entries in a shard")
            }
        };
        let tag = tag_of(key);
        let hasher = &self.hasher;
        self.tables[table_of(key)].insert_unique(
            hasher.hash_one(tag),
            Indexed { tag, slot },
            |i| hasher.hash_one(i.tag),
        );
        self.link(slot, queue, end);
    }

    /// Removes the entry under `key`; returns it and the queue it was in.
    pub(super) fn remove(&mut self, key: Key) -> Option<(Queue, Entry)> {
        let slot = self.find(key)?;
        Some(self.remove_slot(key, slot))
    }

    /// The oldest entry of `queue`: the next to leave it.
    pub(super) fn oldest_mut(&mut self, queue: Queue) -> Option<&mut Entry> {
        let slot = self.lists[queue as usize].oldest;
        if slot == NIL {
            return None;
        }
        Some(&mut node_mut(&mut self.chunks, slot).entry)
    }

    /// Removes the oldest entry of `queue`.
    pub(super) fn pop_oldest(&mut self, queue: Queue) -> Option<(Key, Entry)> {
        let slot = self.lists[queue as usize].oldest;
        if slot == NIL {
            return None;
        }
        let key = node(&self.chunks, slot).key;
        Some((key, self.remove_slot(key, slot).1))
    }

    /// Moves the oldest entry of `from` to the newest end of `to`: the small queue's
    /// promotion into the main queue, or the main queue going round its clock.
    pub(super) fn requeue_oldest(&mut self, from: Queue, to: Queue) {
        let slot = self.lists[from as usize].oldest;
        if slot != NIL {
            self.unlink(slot);
            self.link(slot, to, End::Newest);
        }
    }

    /// The entries of `queue` from its oldest end, or from its newest.
    pub(super) fn walk(&self, queue: Queue, from: End) -> Walk<'_> {
        let list = self.lists[queue as usize];
        Walk {
            chunks: &self.chunks,
            next: match from {
                End::Oldest => list.oldest,
                End::Newest => list.newest,
            },
            from,
        }
    }

    fn remove_slot(&mut self, key: Key, slot: u32) -> (Queue, Entry) {
        let tag = tag_of(key);
        let table = &mut self.tables[table_of(key)];
        let Ok(indexed) = table.find_entry(self.hasher.hash_one(tag), |i| i.slot == slot) else {
            unreachable!("every node is indexed");
        };
        indexed.remove();
        self.unlink(slot);
        let slot_at = slot as usize;
        let n = self.chunks[slot_at / CHUNK][slot_at % CHUNK]
            .take()
            .expect("a linked slot holds a node");
        self.free.push(slot);
        (n.queue, n.entry)
    }

    fn link(&mut self, slot: u32, queue: Queue, end: End) {
        let list = self.lists[queue as usize];
        let n = node_mut(&mut self.chunks, slot);
        n.queue = queue;
        match end {
            End::Newest => {
                (n.newer, n.older) = (NIL, list.newest);
                match list.newest {
                    NIL => self.lists[queue as usize].oldest = slot,
                    newest => node_mut(&mut self.chunks, newest).newer = slot,
                }
                self.lists[queue as usize].newest = slot;
            }
            End::Oldest => {
                (n.newer, n.older) = (list.oldest, NIL);
                match list.oldest {
                    NIL => self.lists[queue as usize].newest = slot,
                    oldest => node_mut(&mut self.chunks, oldest).older = slot,
                }
                self.lists[queue as usize].oldest = slot;
            }
        }
        self.lists[queue as usize].len += 1;
    }

    fn unlink(&mut self, slot: u32) {
        let n = node(&self.chunks, slot);
        let (queue, newer, older) = (n.queue as usize, n.newer, n.older);
        match newer {
            NIL => self.lists[queue].newest = older,
            newer => node_mut(&mut self.chunks, newer).older = older,
        }
        match older {
            NIL => self.lists[queue].oldest = newer,
            older => node_mut(&mut self.chunks, older).newer = newer,
        }
        self.lists[queue].len -= 1;
    }
}

/// The entries of a queue in order (see [`Queues::walk`]).
pub(super) struct Walk<'a> {
    chunks: &'a [Vec<Option<Node>>],
    next: u32,
    from: End,
}

impl<'a> Iterator for Walk<'a> {
    type Item = (Key, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == NIL {
            return None;
        }
        let n = node(self.chunks, self.next);
        self.next = match self.from {
            End::Oldest => n.newer,
            End::Newest => n.older,
        };
        Some((n.key, &n.entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(weight: usize) -> Entry {
        Entry::of_weight(weight)
    }

    /// Keys spread over the tables and tags, as hashes are.
    fn k(n: u128) -> Key {
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    }

    fn keys(q: &Queues, queue: Queue, from: End) -> Vec<Key> {
        q.walk(queue, from).map(|(key, _)| key).collect()
    }

    #[test]
    fn each_queue_keeps_its_order_through_pushes_moves_and_removals() {
        let mut q = Queues::new();
        for n in 1..=4 {
            q.push(k(n), entry(n as usize), Queue::Small, End::Newest);
        }
        q.push(k(9), entry(9), Queue::Main, End::Newest);
        q.push(k(8), entry(8), Queue::Main, End::Oldest);
        assert_eq!(keys(&q, Queue::Small, End::Oldest), [1, 2, 3, 4].map(k));
        assert_eq!(keys(&q, Queue::Small, End::Newest), [4, 3, 2, 1].map(k));
        assert_eq!(keys(&q, Queue::Main, End::Oldest), [8, 9].map(k));
        assert_eq!(keys(&q, Queue::Main, End::Newest), [9, 8].map(k));

        q.requeue_oldest(Queue::Small, Queue::Main);
        assert_eq!(keys(&q, Queue::Main, End::Oldest), [8, 9, 1].map(k));
        assert_eq!(
            q.get(k(1)).map(|(queue, e)| (queue, e.weight())),
            Some((Queue::Main, 1))
        );
        q.requeue_oldest(Queue::Main, Queue::Main);
        assert_eq!(keys(&q, Queue::Main, End::Oldest), [9, 1, 8].map(k));

        assert_eq!(
            q.remove(k(3)).map(|(queue, e)| (queue, e.weight())),
            Some((Queue::Small, 3))
        );
        assert!(q.remove(k(3)).is_none() && q.get(k(3)).is_none());
        assert_eq!(keys(&q, Queue::Small, End::Newest), [4, 2].map(k));
        let (key, e) = q.pop_oldest(Queue::Small).unwrap();
        assert_eq!((key, e.weight()), (k(2), 2));
        let (key, e) = q.pop_oldest(Queue::Small).unwrap();
        assert_eq!((key, e.weight()), (k(4), 4));
        assert!(q.pop_oldest(Queue::Small).is_none() && q.is_empty(Queue::Small));
        assert_eq!((q.len(Queue::Small), q.len(Queue::Main)), (0, 3));
        assert_eq!(keys(&q, Queue::Main, End::Newest), [8, 1, 9].map(k));
    }

    /// Past a few chunks and every table's first doublings, with slots reused: every key
    /// still finds its own entry, and removed ones are gone.
    #[test]
    fn keys_find_their_entries_as_the_index_grows_and_slots_are_reused() {
        let mut q = Queues::new();
        let n = (CHUNK * 40) as u128;
        for i in 0..n {
            q.push(k(i), entry(i as usize), Queue::Small, End::Newest);
        }
        for i in (0..n).step_by(3) {
            assert_eq!(q.remove(k(i)).unwrap().1.weight(), i as usize);
        }
        for i in n..n + n / 3 {
            q.push(k(i), entry(i as usize), Queue::Main, End::Newest);
        }
        assert_eq!(
            q.chunks.len(),
            40,
            "removed slots were reused, no chunk added"
        );
        for i in 0..n + n / 3 {
            let found = q.get(k(i)).map(|(_, e)| e.weight());
            assert_eq!(
                found,
                (i >= n || i % 3 != 0).then_some(i as usize),
                "key {i}"
            );
        }
        let total = q.len(Queue::Small) + q.len(Queue::Main);
        assert_eq!(total, q.tables.iter().map(HashTable::len).sum::<usize>());
    }

    /// Keys that share the tag (bits 32-95) are told apart by the whole key.
    #[test]
    fn keys_with_the_same_tag_stay_apart() {
        let mut q = Queues::new();
        let (a, b) = (5u128, 5u128 | 1 << 100);
        assert_eq!((tag_of(a), table_of(a)), (tag_of(b), table_of(b)));
        q.push(a, entry(1), Queue::Small, End::Newest);
        assert!(q.get(b).is_none());
        q.push(b, entry(2), Queue::Main, End::Newest);
        assert_eq!(q.get(a).map(|(_, e)| e.weight()), Some(1));
        assert_eq!(q.remove(b).map(|(_, e)| e.weight()), Some(2));
        assert_eq!(q.get(a).map(|(_, e)| e.weight()), Some(1));
    }
}
