//! Topic lookup by canonical URL: the [`TopicLookup`] trait used by validation and the matcher,
//! and [`TopicCatalog`], its in-memory implementation.

use std::collections::BTreeMap;

use crate::model::Topic;

/// Finds a topic by its canonical URL. A canonical may carry a `|version` suffix, which is
/// ignored (Herald keeps one version of each topic).
pub trait TopicLookup {
    /// The topic with canonical `url` (with or without `|version`), if known.
    fn topic(&self, url: &str) -> Option<&Topic>;
}

/// Strips a `|version` suffix from a canonical.
pub fn canonical_url(url: &str) -> &str {
    url.split_once('|').map(|(u, _)| u).unwrap_or(url).trim()
}

/// An in-memory set of topics keyed by canonical URL (ordered, so listings are stable).
#[derive(Debug, Clone, Default)]
pub struct TopicCatalog {
    topics: BTreeMap<String, Topic>,
}

impl TopicCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// A catalog holding the built-in topics ([`crate::builtin::topics`]) of `version`.
    pub fn with_builtins(version: herald_fhir::FhirVersion) -> Self {
        let mut c = Self::new();
        for t in crate::builtin::topics(version) {
            c.insert(t);
        }
        c
    }

    /// Adds or replaces a topic; returns the one it replaced.
    pub fn insert(&mut self, topic: Topic) -> Option<Topic> {
        self.topics
            .insert(canonical_url(&topic.url).to_owned(), topic)
    }

    /// Removes a topic by canonical URL.
    pub fn remove(&mut self, url: &str) -> Option<Topic> {
        self.topics.remove(canonical_url(url))
    }

    /// All topics, ordered by URL.
    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

impl TopicLookup for TopicCatalog {
    fn topic(&self, url: &str) -> Option<&Topic> {
        self.topics.get(canonical_url(url))
    }
}

impl<T: TopicLookup + ?Sized> TopicLookup for &T {
    fn topic(&self, url: &str) -> Option<&Topic> {
        (**self).topic(url)
    }
}
