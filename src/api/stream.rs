//! `GET /api/v1/stream`: this node's attempts as they finish, as server-sent events, with the
//! delivery search's filters (less the time range) and an `outcome` filter.
//!
//! Each attempt is an event `attempt` whose data is the attempt as JSON. A watcher that falls
//! more than the feed's backlog behind gets an event `lagged` saying how many it missed, and
//! the stream goes on. Idle streams carry a comment every 15 s so proxies keep them open.

use super::ops::{DeliveryQuery, query_error};
use super::{ApiError, ApiState};
use crate::deliver::feed::FinishedAttempt;
use crate::metrics::AttemptLabel;
use crate::store::DeliveryFilter;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub async fn attempts(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let filter = query.filter()?;
    let paging = [
        ("limit", query.limit.is_some()),
        ("page_token", query.page_token.is_some()),
    ];
    for (name, given) in paging {
        if given {
            return Err(ApiError::unprocessable(format!(
                "{name}: the stream is not paged; it sends attempts as they finish"
            )));
        }
    }
    for (name, given) in [
        ("since", filter.created_from),
        ("until", filter.created_before),
    ] {
        if given.is_some() {
            return Err(ApiError::unprocessable(format!(
                "{name}: the stream shows attempts as they finish; search past ones with GET /api/v1/deliveries"
            )));
        }
    }
    let outcome = match query.outcome.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(AttemptLabel::parse(text).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "outcome: {text:?} is not one of succeeded, retry, failed, skipped"
            ))
        })?),
    };
    let receiver = state.feed.subscribe();
    let events = futures_util::stream::unfold(receiver, move |mut receiver| {
        let filter = filter.clone();
        async move {
            loop {
                match receiver.recv().await {
                    Ok(attempt) => {
                        if wanted(&filter, outcome, &attempt) {
                            let event = Event::default()
                                .event("attempt")
                                .json_data(&*attempt)
                                .unwrap_or_else(|_| Event::default().comment("unencodable"));
                            return Some((Ok(event), receiver));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((Ok(event), receiver));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    // Ends at shutdown, so an open stream does not hold the server's graceful drain.
    let events = events.take_until(state.stopping.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn wanted(
    filter: &DeliveryFilter,
    outcome: Option<AttemptLabel>,
    attempt: &FinishedAttempt,
) -> bool {
    outcome.is_none_or(|outcome| attempt.outcome == outcome.as_str())
        && filter.matches_facts(
            attempt.status,
            &attempt.event_type,
            &attempt.event_id,
            &attempt.webhook_url,
            &attempt.source,
            None,
        )
}
