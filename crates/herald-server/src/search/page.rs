//! Paging of search and history results: `_count`/`_offset` and the `self`/`first`/
//! `previous`/`next` links that repeat the query.

use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A page request: `_count` and `_offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Entries per page.
    pub count: usize,
    /// Index of the first entry.
    pub offset: usize,
}

impl Page {
    /// Reads `_count`/`_offset` from a query string (400 on non-numbers; `_count` capped).
    pub fn from_query(state: &AppState, query: &str) -> ApiResult<Page> {
        let mut page = Page {
            count: state.config.default_page_size,
            offset: 0,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let n = || {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{k} must be a non-negative integer, got '{v}'"))
                })
            };
            match k.as_ref() {
                "_count" => page.count = n()?.min(state.config.max_page_size),
                "_offset" => page.offset = n()?,
                _ => {}
            }
        }
        Ok(page)
    }

    /// The entries of this page.
    pub fn slice<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        let start = self.offset.min(all.len());
        let end = start.saturating_add(self.count).min(all.len());
        &all[start..end]
    }

    /// Bundle links for this page; `query` holds the criteria to repeat (already encoded).
    pub fn links(&self, base: &str, query: &str, total: usize) -> Vec<Value> {
        let url = |offset: usize| {
            let sep = if query.is_empty() { "" } else { "&" };
            format!("{base}?{query}{sep}_count={}&_offset={offset}", self.count)
        };
        let mut links = vec![json!({"relation": "self", "url": url(self.offset)})];
        if self.offset > 0 {
            links.push(json!({"relation": "first", "url": url(0)}));
            links.push(
                json!({"relation": "previous", "url": url(self.offset.saturating_sub(self.count))}),
            );
        }
        if self.count > 0 && self.offset + self.count < total {
            links.push(json!({"relation": "next", "url": url(self.offset + self.count)}));
        }
        links
    }
}
