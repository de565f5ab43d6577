//! Searching deliveries and events: filters over the delivery list and the event list,
//! newest first, with keyset pages.
//!
//! The filters run over the rows the list reads (through the status index when a status is
//! given), not in SQL: one code path for both stores, and no index per filter to write on
//! every accepted delivery. So a page reads at most `scan_rows` rows; a rare match far back
//! comes over several pages, each holding what its rows matched (possibly nothing) and a
//! token to go on from. An event id goes straight to that event's deliveries.

use super::{DeliveryView, EventCursor, EventSummary, Page, Store, StoreError};
use crate::domain::{
    ConfigId, DeliveryStatus, DestinationSource, EventId, EventType, UnixMillis, display_host,
    redacted_url,
};

/// Which deliveries a search wants; every filter set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
    pub event_id: Option<EventId>,
    /// The destination's host as [`display_host`] names it (lower case, port only when not
    /// the default).
    pub host: Option<String>,
    /// A prefix of the destination URL as the API shows it (credentials as `***`), so a
    /// search cannot be used to guess a password one character at a time.
    pub url_prefix: Option<String>,
    pub config_id: Option<ConfigId>,
    /// Created at or after this time.
    pub created_from: Option<UnixMillis>,
    /// Created before this time.
    pub created_before: Option<UnixMillis>,
}

/// Rows read per store call while searching.
const SEARCH_BATCH: usize = 500;
/// Rows are numbered in insert order and stamped by the inserting node's clock, so a row
/// may be a little older than one numbered before it: a scan stops this far past the start
/// of a time range, not at its first older row.
const CLOCK_SKEW_MS: UnixMillis = 5 * 60 * 1000;

impl DeliveryFilter {
    /// Only the status is filtered: the plain list answers it.
    fn status_only(&self) -> bool {
        *self
            == DeliveryFilter {
                status: self.status,
                ..DeliveryFilter::default()
            }
    }

    pub fn matches(&self, view: &DeliveryView) -> bool {
        self.matches_facts(
            view.status,
            &view.event_type,
            &view.event_id,
            &view.webhook_url,
            &view.source,
            Some(view.created_at),
        )
    }

    /// The filter over a delivery's facts; without a creation time (an attempt on the live
    /// stream), the time range is not looked at.
    pub fn matches_facts(
        &self,
        status: DeliveryStatus,
        event_type: &str,
        event_id: &EventId,
        webhook_url: &str,
        source: &DestinationSource,
        created_at: Option<UnixMillis>,
    ) -> bool {
        self.status.is_none_or(|wanted| status == wanted)
            && self
                .event_type
                .is_none_or(|wanted| event_type == wanted.as_str())
            && self
                .event_id
                .as_ref()
                .is_none_or(|wanted| event_id == wanted)
            && self
                .host
                .as_ref()
                .is_none_or(|host| display_host(webhook_url) == *host)
            && self
                .url_prefix
                .as_ref()
                .is_none_or(|prefix| redacted_url(webhook_url).starts_with(prefix.as_str()))
            && self.config_id.as_ref().is_none_or(|config_id| {
                matches!(source, DestinationSource::Saved { config_id: saved } if saved == config_id)
            })
            && created_at.is_none_or(|created_at| {
                self.created_from.is_none_or(|from| created_at >= from)
                    && self.created_before.is_none_or(|before| created_at < before)
            })
    }
}

impl Store {
    /// The deliveries matching `filter`, newest first, at most `limit`, from below the
    /// position `before` (a page token). Reads at most `scan_rows` rows past the first
    /// (at least one batch): the page may then hold fewer than `limit` matches and still
    /// have a next page.
    pub async fn search_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: usize,
        before: Option<i64>,
        scan_rows: usize,
    ) -> Result<Page<DeliveryView>, StoreError> {
        if filter.status_only() {
            return self.deliveries(filter.status, limit, before).await;
        }
        if let Some(event_id) = &filter.event_id {
            let mut items: Vec<DeliveryView> = match self.event(event_id).await? {
                Some(event) => event.deliveries,
                None => Vec::new(),
            };
            items.retain(|view| {
                filter.matches(view) && before.is_none_or(|before| view.seq < before)
            });
            items.sort_by_key(|view| std::cmp::Reverse(view.seq));
            return Ok(Page::from_rows(items, limit, |view| view.seq, None));
        }
        let mut items = Vec::new();
        let mut cursor = before;
        let mut scanned = 0usize;
        loop {
            // Never past the page's budget of rows.
            let batch_rows = SEARCH_BATCH.min(scan_rows.saturating_sub(scanned).max(1));
            let batch = self.deliveries(filter.status, batch_rows, cursor).await?;
            scanned += batch.items.len();
            let past_range = filter.created_from.is_some_and(|from| {
                batch
                    .items
                    .last()
                    .is_some_and(|oldest| oldest.created_at < from.saturating_sub(CLOCK_SKEW_MS))
            });
            for view in batch.items {
                let position = view.seq;
                if filter.matches(&view) {
                    items.push(view);
                    if items.len() > limit {
                        return Ok(Page::from_rows(items, limit, |view| view.seq, None));
                    }
                }
                cursor = Some(position);
            }
            if batch.next_cursor.is_none() || past_range {
                return Ok(Page {
                    items,
                    next_cursor: None,
                    total: None,
                });
            }
            if scanned >= scan_rows {
                // The page is short, but rows remain: the token goes on from the last row read.
                return Ok(Page {
                    items,
                    next_cursor: cursor,
                    total: None,
                });
            }
        }
    }
}

/// Which events a search wants: their own facts, and, when `deliveries` is set, at least one
/// delivery that filter matches.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<EventType>,
    pub event_id: Option<EventId>,
    pub project_id: Option<String>,
    pub created_from: Option<UnixMillis>,
    pub created_before: Option<UnixMillis>,
    pub deliveries: Option<DeliveryFilter>,
}

impl EventFilter {
    fn matches_event(&self, event: &EventSummary) -> bool {
        self.event_type
            .is_none_or(|wanted| event.event_type == wanted.as_str())
            && self
                .project_id
                .as_ref()
                .is_none_or(|wanted| event.project_id.as_ref() == Some(wanted))
            && self
                .created_from
                .is_none_or(|from| event.accepted_at >= from)
            && self
                .created_before
                .is_none_or(|before| event.accepted_at < before)
    }
}

/// A page of events and where the next one starts.
pub struct EventPage {
    pub items: Vec<EventSummary>,
    pub next: Option<EventCursor>,
}

impl Store {
    /// The events matching `filter`, newest first, at most `limit`, from below `before`. Reads
    /// at most `scan_rows` events, a tenth of that when a delivery filter is set (each is then
    /// read whole, with its deliveries): a short page with a `next` goes on further back.
    pub async fn search_events(
        &self,
        filter: &EventFilter,
        limit: usize,
        before: Option<EventCursor>,
        scan_rows: usize,
    ) -> Result<EventPage, StoreError> {
        if let Some(event_id) = &filter.event_id {
            let items = match self.event(event_id).await? {
                Some(event) if before.is_none() => {
                    let summary = EventSummary {
                        event_id: event.event_id.clone(),
                        event_type: event.event_type.clone(),
                        project_id: event.project_id.clone(),
                        timestamp: event.timestamp,
                        accepted_at: event.accepted_at,
                        position: EventCursor::default(),
                    };
                    let deliveries_match = filter.deliveries.as_ref().is_none_or(|wanted| {
                        event.deliveries.iter().any(|view| wanted.matches(view))
                    });
                    (filter.matches_event(&summary) && deliveries_match)
                        .then_some(summary)
                        .into_iter()
                        .collect()
                }
                _ => Vec::new(),
            };
            return Ok(EventPage { items, next: None });
        }
        // Checking an event's deliveries reads the event whole: a tenth as many a page.
        let scan_rows = match filter.deliveries {
            Some(_) => (scan_rows / 10).max(1),
            None => scan_rows,
        };
        let mut items: Vec<EventSummary> = Vec::new();
        let mut cursor = before;
        let mut scanned = 0usize;
        loop {
            let batch_rows = SEARCH_BATCH.min(scan_rows.saturating_sub(scanned).max(1));
            let batch = self.recent_events(cursor.clone(), batch_rows).await?;
            let exhausted = batch.len() < batch_rows;
            scanned += batch.len();
            for event in batch {
                cursor = Some(event.position.clone());
                if filter
                    .created_from
                    .is_some_and(|from| event.accepted_at < from.saturating_sub(CLOCK_SKEW_MS))
                {
                    return Ok(EventPage { items, next: None });
                }
                if !filter.matches_event(&event) {
                    continue;
                }
                if let Some(wanted) = &filter.deliveries {
                    let deliveries = match self.event(&event.event_id).await? {
                        Some(view) => view.deliveries,
                        None => continue,
                    };
                    if !deliveries.iter().any(|view| wanted.matches(view)) {
                        continue;
                    }
                }
                items.push(event);
                if items.len() > limit {
                    items.truncate(limit);
                    let next = items.last().map(|last| last.position.clone());
                    return Ok(EventPage { items, next });
                }
            }
            if exhausted {
                return Ok(EventPage { items, next: None });
            }
            if scanned >= scan_rows {
                return Ok(EventPage {
                    items,
                    next: cursor,
                });
            }
        }
    }
}
