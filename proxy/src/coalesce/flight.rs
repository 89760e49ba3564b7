//! One upstream answer shared by a group: its head once known, and its body as a buffer of
//! chunks that every subscriber (the leader and each follower) reads in order from the start.
//!
//! - While the answer so far is under the cap, every chunk is kept, so a follower that joins
//!   late reads what was already sent, then the rest as it comes: no gap, no reordering.
//! - Once the answer reaches the cap (or the group is full, or the answer has ended), the group
//!   closes to new followers, and chunks that every subscriber has read are dropped.
//! - The upstream body is not read further while the slowest subscriber has `cap` bytes unread:
//!   memory per answer stays within the cap plus one chunk, and a slow reader slows its group
//!   as it would slow its own upstream stream.
//! - When the last subscriber goes (every client disconnected), the group is abandoned, and the
//!   task driving the upstream answer drops it.
//! - Every subscriber learns how the answer ended, after its last chunk: its trailers (gRPC's
//!   status), or that it broke off upstream (then the subscriber's own body fails too, as its
//!   own upstream body would have).

use crate::body::Piece;
use crate::error::ProxyError;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How a group's followers are to be answered.
#[derive(Clone, Debug)]
pub enum Head {
    /// No answer yet.
    Pending,
    /// The leader's status and headers; the body follows in the buffer.
    Ready(Arc<(StatusCode, HeaderMap)>),
    /// Followers go upstream on their own (the leader's error was one that may succeed when
    /// tried again, or its answer was a 429/503).
    Alone,
    /// Followers get this error, as the leader did.
    Failed(Arc<ProxyError>),
}

/// How a shared body ended.
#[derive(Clone, Debug)]
pub enum Ending {
    /// Cleanly, with these trailers or none.
    Clean(Option<Arc<HeaderMap>>),
    /// It broke off upstream (or its driver ended without seeing the end).
    Broken,
}

/// One shared answer.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<State>,
    changed: Notify,
    cap: u64,
    max_followers: usize,
}

#[derive(Debug)]
struct State {
    head: Head,
    chunks: VecDeque<Bytes>,
    /// Index (in the whole answer) of `chunks[0]`.
    base: u64,
    /// Bytes in `chunks`.
    buffered: u64,
    /// Body bytes of the answer so far.
    total: u64,
    /// How the body ended, once it has.
    ended: Option<Ending>,
    /// `(id, index of the next chunk to read)` of each subscriber.
    subs: Vec<(u64, u64)>,
    next_id: u64,
    followers: usize,
    /// Whether followers may still join.
    open: bool,
}

/// A subscriber: reads the answer from its first chunk.
#[derive(Debug)]
pub struct Sub {
    flight: Arc<Flight>,
    id: u64,
    /// Whether the ending has been handed on.
    told_end: bool,
}

impl Flight {
    /// A new group with its leader's subscription.
    pub fn new(cap: u64, max_followers: usize) -> (Arc<Flight>, Sub) {
        let state = State {
            head: Head::Pending,
            chunks: VecDeque::new(),
            base: 0,
            buffered: 0,
            total: 0,
            ended: None,
            subs: vec![(0, 0)],
            next_id: 1,
            followers: 0,
            open: true,
        };
        let flight = Arc::new(Flight { state: Mutex::new(state), changed: Notify::new(), cap, max_followers });
        let sub = Sub { flight: Arc::clone(&flight), id: 0, told_end: false };
        (flight, sub)
    }

    /// Joins as a follower, if the group is still open: not full, not failed, not abandoned,
    /// its answer not ended and under the cap.
    pub fn join(self: &Arc<Self>) -> Option<Sub> {
        let mut st = crate::lock(&self.state);
        let failed = matches!(st.head, Head::Alone | Head::Failed(_));
        if !st.open || failed || st.ended.is_some() || st.subs.is_empty() || st.followers >= self.max_followers {
            return None;
        }
        st.followers += 1;
        if st.followers >= self.max_followers {
            self.close(&mut st);
        }
        let id = st.next_id;
        st.next_id += 1;
        st.subs.push((id, 0));
        Some(Sub { flight: Arc::clone(self), id, told_end: false })
    }

    /// Followers of this group so far.
    pub fn followers(&self) -> usize {
        crate::lock(&self.state).followers
    }

    /// Sets how followers are answered.
    pub fn set_head(&self, head: Head) {
        let mut st = crate::lock(&self.state);
        if !matches!(head, Head::Ready(_)) {
            st.open = false;
        }
        st.head = head;
        drop(st);
        self.changed.notify_waiters();
    }

    /// Adds a chunk of the body. Returns true when this closed the group to new followers (the
    /// answer reached the cap).
    pub fn push(&self, chunk: Bytes) -> bool {
        let mut st = crate::lock(&self.state);
        st.total += chunk.len() as u64;
        st.buffered += chunk.len() as u64;
        st.chunks.push_back(chunk);
        let closed = st.open && st.total >= self.cap;
        if closed {
            self.close(&mut st);
        }
        drop(st);
        self.changed.notify_waiters();
        closed
    }

    /// The body ended this way (the first ending told counts).
    pub fn finish(&self, ending: Ending) {
        let mut st = crate::lock(&self.state);
        st.ended.get_or_insert(ending);
        self.close(&mut st);
        drop(st);
        self.changed.notify_waiters();
    }

    /// The driver is done, however it ended: followers still waiting for a head go upstream on
    /// their own, and readers end after the last chunk (with a broken body, unless the driver
    /// told a clean end first).
    pub fn settle(&self) {
        let mut st = crate::lock(&self.state);
        if matches!(st.head, Head::Pending) {
            st.head = Head::Alone;
        }
        st.ended.get_or_insert(Ending::Broken);
        self.close(&mut st);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Waits until the slowest subscriber has less than the cap unread: true then, false when
    /// every subscriber has gone.
    pub async fn room(&self) -> bool {
        self.wait(|st| if st.subs.is_empty() { Some(false) } else { (st.buffered < self.cap).then_some(true) }).await
    }

    /// Resolves when every subscriber has gone.
    pub async fn abandoned(&self) {
        self.wait(|st| st.subs.is_empty().then_some(())).await
    }

    /// Bytes held in the buffer now.
    pub fn buffered(&self) -> u64 {
        crate::lock(&self.state).buffered
    }

    /// Closes to new followers and drops what every subscriber has read.
    fn close(&self, st: &mut State) {
        st.open = false;
        trim(st);
    }

    async fn wait<T>(&self, mut ready: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no change between the two is missed.
            notified.as_mut().enable();
            if let Some(t) = ready(&mut crate::lock(&self.state)) {
                return t;
            }
            notified.await;
        }
    }
}

/// Drops the chunks that every subscriber has read (only once the group is closed: until then
/// a follower may still join and read from the start).
fn trim(st: &mut State) {
    if st.open {
        return;
    }
    let end = st.base + st.chunks.len() as u64;
    let min = st.subs.iter().map(|&(_, c)| c).min().unwrap_or(end);
    while st.base < min {
        let Some(c) = st.chunks.pop_front() else { break };
        st.buffered -= c.len() as u64;
        st.base += 1;
    }
}

/// The groups in flight, by key: one map per stack, shared by its clones.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<std::collections::HashMap<super::key::Key, Arc<Flight>>>,
}

impl Flights {
    /// Joins the open group of `key` as a follower, or starts a new group (replacing one that
    /// is closed) with the caller as its leader: `Ok(follower)` or `Err((group, leader))`.
    pub fn join_or_lead(
        &self,
        key: super::key::Key,
        cap: u64,
        max_followers: usize,
    ) -> Result<Sub, (Arc<Flight>, Sub)> {
        let mut map = crate::lock(&self.map);
        if let Some(sub) = map.get(&key).and_then(Flight::join) {
            return Ok(sub);
        }
        let (flight, leader) = Flight::new(cap, max_followers);
        map.insert(key, Arc::clone(&flight));
        Err((flight, leader))
    }

    /// Forgets the group of `key`, if it is still this one.
    pub fn remove(&self, key: super::key::Key, flight: &Arc<Flight>) {
        let mut map = crate::lock(&self.map);
        if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&key);
        }
    }

    /// Groups in the map now.
    pub fn len(&self) -> usize {
        crate::lock(&self.map).len()
    }

    /// Whether no group is in the map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Sub ===

impl Sub {
    /// Waits for the head.
    pub async fn head(&self) -> Head {
        self.flight.wait(|st| (!matches!(st.head, Head::Pending)).then(|| st.head.clone())).await
    }

    /// The next piece, in order: the chunks, then the trailers or the break (if the body ended
    /// so); `None` after that.
    pub async fn next(&mut self) -> Option<Piece> {
        if self.told_end {
            return None;
        }
        let id = self.id;
        let flight = Arc::clone(&self.flight);
        let (step, freed) = flight
            .wait(|st| {
                let Some(i) = st.subs.iter().position(|&(s, _)| s == id) else {
                    return Some((Step::End(None), false));
                };
                let cursor = st.subs[i].1;
                if let Some(c) = cursor.checked_sub(st.base).and_then(|k| st.chunks.get(k as usize)).cloned() {
                    st.subs[i].1 += 1;
                    // Reading the oldest chunk may free room for the driver.
                    let freed = cursor == st.base && !st.open;
                    if freed {
                        trim(st);
                    }
                    return Some((Step::Chunk(c), freed));
                }
                st.ended.as_ref().map(|e| {
                    let last = match e {
                        Ending::Clean(None) => None,
                        Ending::Clean(Some(t)) => Some(Piece::Trailers(HeaderMap::clone(t))),
                        Ending::Broken => Some(Piece::Broken),
                    };
                    (Step::End(last), false)
                })
            })
            .await;
        if freed {
            flight.changed.notify_waiters();
        }
        match step {
            Step::Chunk(c) => Some(Piece::Data(c)),
            Step::End(last) => {
                self.told_end = true;
                last
            }
        }
    }
}

/// What a subscriber reads next.
enum Step {
    Chunk(Bytes),
    /// The end, with its last piece (trailers, or the break), if any.
    End(Option<Piece>),
}

impl Drop for Sub {
    fn drop(&mut self) {
        let mut st = crate::lock(&self.flight.state);
        st.subs.retain(|&(s, _)| s != self.id);
        trim(&mut st);
        drop(st);
        self.flight.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
