//! Events for the SQLite store's own tests.

use crate::domain::{
    DeliveryId, Destination, DestinationSource, EventId, OutputFormat, RetryOverride,
};
use crate::store::{Lease, NewDelivery, NewEvent};

/// An event with one delivery to `url`, handed over with `lease` when given.
pub fn one_delivery(url: &str, lease: Option<Lease>) -> NewEvent {
    let id = EventId::generate();
    NewEvent {
        payload: format!(r#"{{"event_id":"{id}"}}"#),
        id,
        event_type: "parse.success".into(),
        project_id: None,
        timestamp: 1.0,
        deliveries: vec![NewDelivery {
            id: DeliveryId::generate(),
            destination: Destination {
                url: url.to_owned(),
                headers: Vec::new(),
                output_format: OutputFormat::Json,
                signing_secret: None,
                previous_signing_secret: None,
                transform: None,
                transform_config: None,
                retry: RetryOverride::default(),
                source: DestinationSource::Inline,
            },
            lease,
        }],
    }
}
