//! Objects held by key, where a change to one object dirties its own key and nothing else: the
//! index of Services and the index of injected Pods.

use super::{Dirty, Index, ObjectKey};
use std::collections::HashMap;

/// What an object held [`ByKey`] is keyed by.
pub trait Keyed {
    /// Its namespace and name.
    fn key(&self) -> &ObjectKey;
}

/// Objects by key; an index call records in its [`Dirty`] set the keys of the objects that were
/// added, changed or removed.
#[derive(Debug)]
pub struct ByKey<T> {
    by_key: HashMap<ObjectKey, T>,
}

impl<T> Default for ByKey<T> {
    fn default() -> Self {
        ByKey { by_key: HashMap::new() }
    }
}

impl<T> ByKey<T> {
    /// An object by key.
    pub fn get(&self, key: &ObjectKey) -> Option<&T> {
        self.by_key.get(key)
    }

    /// Every object, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.by_key.values()
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl<T: Keyed + PartialEq> Index<T> for ByKey<T> {
    fn apply(&mut self, obj: T, dirty: &mut Dirty) {
        if self.by_key.get(obj.key()) != Some(&obj) {
            dirty.insert(obj.key().clone());
            self.by_key.insert(obj.key().clone(), obj);
        }
    }

    fn delete(&mut self, key: &ObjectKey, dirty: &mut Dirty) {
        if self.by_key.remove(key).is_some() {
            dirty.insert(key.clone());
        }
    }

    fn reset(&mut self, objs: Vec<T>, dirty: &mut Dirty) {
        let mut fresh: HashMap<ObjectKey, T> = objs.into_iter().map(|o| (o.key().clone(), o)).collect();
        for (key, old) in &self.by_key {
            if fresh.get(key) != Some(old) {
                dirty.insert(key.clone());
            }
        }
        for key in fresh.keys() {
            if !self.by_key.contains_key(key) {
                dirty.insert(key.clone());
            }
        }
        std::mem::swap(&mut self.by_key, &mut fresh);
    }
}
