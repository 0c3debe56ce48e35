//! One attempt, run as its own task: build the notification Bundle from stored events (read at
//! the versions that triggered them) and hand it to the subscription's channel.

use std::sync::Arc;
use std::time::Duration;

use herald_fhir::FhirVersion;
use herald_store::{DeliveryState, Surfaces};
use herald_subscriptions::notification::{NotificationInput, NotificationType, build_notification};
use herald_subscriptions::{Subscription, SubscriptionStatus};

use crate::channel::{Channel, Key, Notification, Sent};
use crate::payload::{error_concepts, materialize, subscription_ref};
use crate::policy::Failure;
use crate::signing;
use crate::timers::unix_ms as now_ms;
use crate::transition::Job;

/// The notification type a job sends.
pub fn kind_of(job: Job) -> NotificationType {
    match job {
        Job::Handshake => NotificationType::Handshake,
        Job::Heartbeat => NotificationType::Heartbeat,
        Job::Events(..) => NotificationType::EventNotification,
    }
}

/// Whether a subscription's subscriber may see a resource body now:
/// `(tenant, subscription id, resource type, id, body)`. Installed by the server, which knows
/// who created the subscription and what that client may read; notifications carry only what
/// it says yes to (the send-time check: an owner reassigned since the event gets the event, not
/// the resource).
pub type Visibility = Arc<dyn Fn(&str, &str, &str, &str, &serde_json::Value) -> bool + Send + Sync>;

/// Everything an attempt needs, copied out of the dispatcher's state.
pub struct Attempt {
    /// Where events, resources and signing keys are read.
    pub store: Surfaces,
    /// The channel that carries it.
    pub channel: Arc<dyn Channel>,
    /// Whose.
    pub key: Key,
    /// FHIR version of the tenant.
    pub version: FhirVersion,
    /// The tenant's base URL (references in the Bundle).
    pub base_url: String,
    /// The Subscription as the dispatcher knows it.
    pub sub: Subscription,
    /// What to send.
    pub job: Job,
    /// The durable event count when the attempt started.
    pub durable: u64,
    /// The delivery state when the attempt started (its errors go into the notification; the
    /// dispatcher's copy is the current one, the store's may lag a sync).
    pub state: DeliveryState,
    /// The channel's time limit.
    pub timeout: Duration,
    /// The send-time access check, once installed.
    pub visibility: Option<Visibility>,
}

impl Attempt {
    /// Builds and sends; never fails (a failure is a [`Sent`] with its cause).
    pub async fn run(self) -> Sent {
        let signing = if self.channel.signs() {
            let (tenant, id) = (&self.key.0, &self.key.1);
            match signing::prepare(
                &*self.store.delivery,
                tenant,
                id,
                self.job,
                &self.state,
                now_ms(),
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    return Sent::failed(
                        Failure::Transport,
                        format!("internal: cannot sign the notification: {e}"),
                    );
                }
            }
        } else {
            None
        };
        match bundle(&self) {
            Ok(bundle) => {
                let n = Notification {
                    key: self.key.clone(),
                    job: self.job,
                    bundle,
                    timeout: self.timeout,
                    signing,
                };
                self.channel.send(&self.sub, n).await
            }
            Err(e) => Sent::failed(
                Failure::Transport,
                format!("internal: cannot build the notification: {e}"),
            ),
        }
    }
}

/// The notification Bundle of an attempt.
pub fn bundle(a: &Attempt) -> Result<serde_json::Value, herald_store::StoreError> {
    let (tenant, id) = (&a.key.0, &a.key.1);
    let content = a.sub.channel.content;
    let events = match a.job {
        Job::Events(first, last) => {
            let stored = a.store.events.events(tenant, id, Some(first), Some(last))?;
            let mut records = materialize(&*a.store.resources, tenant, &stored, content)?;
            if let Some(visible) = &a.visibility {
                for e in &mut records {
                    for r in std::iter::once(&mut e.focus).chain(e.additional_context.iter_mut()) {
                        if let Some(body) = &r.resource
                            && !visible(tenant, id, &r.resource_type, &r.id, body)
                        {
                            r.resource = None;
                        }
                    }
                }
            }
            records
        }
        _ => Vec::new(),
    };
    let errors = error_concepts(a.sub.status, &a.state);
    let mut sref = subscription_ref(&a.base_url, &a.sub);
    if a.job == Job::Handshake {
        sref.status = SubscriptionStatus::Requested.code().to_owned();
    } else if a.sub.status == SubscriptionStatus::Requested && a.state.verified {
        // The endpoint accepted the handshake: the Subscription is `active`, even while the
        // server is still storing that status change and this copy says `requested`.
        sref.status = SubscriptionStatus::Active.code().to_owned();
    }
    Ok(build_notification(&NotificationInput {
        version: a.version,
        kind: kind_of(a.job),
        subscription: &sref,
        // An event notification's counter is its highest event number (spec §1.H item 48):
        // events committed while it is being built belong to a later notification.
        events_since_start: match a.job {
            Job::Events(_, last) => last,
            _ => a.durable,
        },
        events: &events,
        content,
        errors,
        bundle_id: uuid::Uuid::new_v4().to_string(),
        timestamp: herald_store::now_instant(),
    }))
}
