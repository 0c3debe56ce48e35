//! Which resources a search reads. With the store's search index, the resources filed under the
//! query's indexable criteria (the intersection of those that are selective, else the whole of
//! one); without an indexable criterion or without the index, every resource of the type. The
//! index only narrows: the caller still evaluates the whole query on each candidate, so
//! modifiers, access rules, sorting and paging mean what they meant with a scan.

use std::collections::BTreeSet;

use herald_fhir::search::index::criterion_ranges;
use herald_fhir::search::{Criterion, SearchValue};
use herald_store::{IndexLookup, ResourceStore};

use crate::error::ApiResult;

/// A criterion whose lookup finds more ids than this is left to the others (when there are
/// others) rather than read whole.
const SELECTIVE: usize = 1024;

/// What to read.
pub(super) enum Candidates {
    /// Every live resource of the type.
    All,
    /// These ids (in id order, the order a scan gives).
    Ids(BTreeSet<String>),
}

type Ranges = Vec<(Vec<u8>, Vec<u8>)>;

/// The candidates of `criteria` (ANDed) among `tenant`'s resources of `rtype`.
pub(super) fn candidates(
    store: &dyn ResourceStore,
    tenant: &str,
    rtype: &str,
    criteria: &[Criterion],
) -> ApiResult<Candidates> {
    if !store.search_index_enabled() {
        return Ok(Candidates::All);
    }
    let mut selective: Vec<BTreeSet<String>> = Vec::new();
    let mut indexable: Vec<Ranges> = Vec::new();
    for c in criteria {
        if let Some(ids) = id_candidates(c) {
            // `_id` needs no index entries: resources are stored by id.
            selective.push(ids);
        } else if store.search_index_covers(tenant, rtype, &c.param.code)
            && let Some(ranges) = criterion_ranges(c)
        {
            indexable.push(ranges.into_iter().map(|r| (r.start, r.end)).collect());
        }
    }
    if indexable.is_empty() && selective.is_empty() {
        if !criteria.is_empty() {
            let names: Vec<&str> = criteria.iter().map(|c| c.param.code.as_str()).collect();
            tracing::debug!(
                tenant,
                resource_type = rtype,
                criteria = ?names,
                "no criterion the search index answers; scanning every resource of the type"
            );
        }
        return Ok(Candidates::All);
    }
    let mut broad: Option<&Ranges> = None;
    for ranges in &indexable {
        // Once a small set is known, a criterion far larger than it cannot narrow it much:
        // reading it whole would cost more than the matcher judging the small set.
        let smallest = selective.iter().map(BTreeSet::len).min();
        let limit = smallest.map_or(SELECTIVE, |n| (n * 16).clamp(64, SELECTIVE));
        match store.search_index(tenant, rtype, ranges, Some(limit))? {
            IndexLookup::Ids(ids) => selective.push(ids),
            IndexLookup::TooMany => {
                broad.get_or_insert(ranges);
            }
            IndexLookup::Off => return Ok(Candidates::All),
        }
    }
    selective.sort_by_key(BTreeSet::len);
    let mut sets = selective.into_iter();
    let Some(mut ids) = sets.next() else {
        // Every indexable criterion is broad: one of them read whole still beats a scan of
        // the type, and the matcher applies the rest.
        return match broad {
            Some(ranges) => match store.search_index(tenant, rtype, ranges, None)? {
                IndexLookup::Ids(ids) => Ok(Candidates::Ids(ids)),
                _ => Ok(Candidates::All),
            },
            None => Ok(Candidates::All),
        };
    };
    for other in sets {
        ids.retain(|id| other.contains(id));
        if ids.is_empty() {
            break;
        }
    }
    Ok(Candidates::Ids(ids))
}

/// The ids an `_id` criterion (no modifier, plain values) can match: the values themselves.
fn id_candidates(c: &Criterion) -> Option<BTreeSet<String>> {
    if c.param.code != "_id" || c.modifier.is_some() {
        return None;
    }
    c.values
        .iter()
        .map(|v| match v {
            SearchValue::Token {
                system: None,
                code: Some(id),
            } => Some(id.clone()),
            _ => None,
        })
        .collect()
}
