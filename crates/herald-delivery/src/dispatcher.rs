//! The dispatcher: one task that owns every subscription's delivery state (the router, in
//! rumqttd's terms) and talks to the rest of Herald through channels.
//!
//! * Commands come in: a subscription was created, changed or deleted; events were committed
//!   for a subscription (`wake`); an operator asked for a redrive.
//! * Per subscription at most one attempt is in flight; attempts run as tasks and report back.
//! * What to send next is decided from stored state: a handshake until the endpoint accepted
//!   one, then the events above the acknowledged cursor (in order, up to `maxCount` per bundle),
//!   else a heartbeat when the channel has been idle for `heartbeatPeriod`.
//! * A failure stores the next attempt time (retries are data); one timer — the earliest due
//!   time — wakes the dispatcher: no task sleeps per retry and nothing polls.
//! * Status changes (`requested` → `active`, → `error`, back to `active`) are requested from the
//!   server through `StatusChange` messages, because a status is part of the stored
//!   Subscription resource and goes through the server's write path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_fhir::FhirVersion;
use herald_store::{AttemptRecord, DeliveryState, Store};
use herald_subscriptions::notification::{NotificationInput, NotificationType, build_notification};
use herald_subscriptions::{ChannelType, Subscription, SubscriptionStatus};
use tokio::sync::mpsc;

use crate::config::DeliveryConfig;
use crate::payload::{error_concepts, materialize, subscription_ref};
use crate::policy::{Failure, RetryPolicy};
use crate::resthook::{RestHook, Sent};

type Key = (String, String);

/// How long a moved delivery cursor waits to ride along with a writer's log sync before it
/// asks for one of its own.
const CURSOR_PATIENCE: Duration = Duration::from_millis(1);

/// A request from the dispatcher to change a Subscription's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// Tenant.
    pub tenant: String,
    /// Subscription id.
    pub subscription: String,
    /// The new status.
    pub status: SubscriptionStatus,
    /// The reason, for `error`.
    pub error: Option<String>,
}

enum Command {
    Upsert {
        tenant: String,
        version: FhirVersion,
        sub: Box<Subscription>,
    },
    Remove(Key),
    Wake(Key, u64),
    Redrive(Key),
}

/// Handle to the dispatcher task (cheap to clone).
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<Command>,
}

impl Dispatcher {
    /// Starts the dispatcher. `base_urls` maps each tenant to the base URL used in notification
    /// references; `status_tx` receives the status changes to apply.
    pub fn start(
        store: Arc<Store>,
        config: DeliveryConfig,
        base_urls: HashMap<String, String>,
        status_tx: mpsc::UnboundedSender<StatusChange>,
    ) -> Result<(Dispatcher, tokio::task::JoinHandle<()>), reqwest::Error> {
        let hook = RestHook::new(
            config.allow_private_endpoints,
            config.attempt_log_body_bytes,
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let router = Router {
            policy: RetryPolicy::new(&config),
            cfg: config,
            store,
            hook,
            base_urls,
            status_tx,
            done_tx,
            subs: HashMap::new(),
            durable: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            ends: BTreeSet::new(),
            end_of: HashMap::new(),
            logged: 0,
        };
        let handle = tokio::spawn(router.run(rx, done_rx));
        Ok((Dispatcher { tx }, handle))
    }

    /// A subscription was created or changed (or loaded at start-up).
    pub fn upsert(&self, tenant: &str, version: FhirVersion, sub: Subscription) {
        let _ = self.tx.send(Command::Upsert {
            tenant: tenant.to_owned(),
            version,
            sub: Box::new(sub),
        });
    }

    /// A subscription was deleted.
    pub fn remove(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send(Command::Remove((tenant.to_owned(), id.to_owned())));
    }

    /// Events up to number `upto` are durable for a subscription (a write that recorded them
    /// was made durable, or they were found on disk at start-up). Only durable events are ever
    /// delivered: one lost in a crash would have its number reused by a different event.
    pub fn wake(&self, tenant: &str, id: &str, upto: u64) {
        let _ = self
            .tx
            .send(Command::Wake((tenant.to_owned(), id.to_owned()), upto));
    }

    /// Clears a subscription's failure streak and parking, and tries again now.
    pub fn redrive(&self, tenant: &str, id: &str) {
        let _ = self
            .tx
            .send(Command::Redrive((tenant.to_owned(), id.to_owned())));
    }
}

#[derive(Debug, Clone)]
enum Job {
    Handshake,
    Heartbeat,
    Events(u64, u64),
}

impl Job {
    fn kind(&self) -> NotificationType {
        match self {
            Job::Handshake => NotificationType::Handshake,
            Job::Heartbeat => NotificationType::Heartbeat,
            Job::Events(..) => NotificationType::EventNotification,
        }
    }
}

struct Entry {
    version: FhirVersion,
    sub: Subscription,
    state: DeliveryState,
    in_flight: bool,
    asked_status: Option<SubscriptionStatus>,
}

struct Done {
    key: Key,
    job: Job,
    endpoint: String,
    sent: Sent,
}

/// What finished tasks report to the router.
enum Report {
    /// An attempt came back.
    Attempt(Done),
    /// The cursor advanced by a delivery is durable: the next batch may go.
    CursorDurable(Key),
}

struct Router {
    cfg: DeliveryConfig,
    policy: RetryPolicy,
    store: Arc<Store>,
    hook: RestHook,
    base_urls: HashMap<String, String>,
    status_tx: mpsc::UnboundedSender<StatusChange>,
    done_tx: mpsc::UnboundedSender<Report>,
    subs: HashMap<Key, Entry>,
    /// Highest event number known durable per subscription (from `wake`; kept apart from
    /// `subs` because a wake can overtake the upsert of a subscription just created).
    durable: HashMap<Key, u64>,
    timers: BTreeSet<(Instant, Key)>,
    timer_of: HashMap<Key, Instant>,
    /// `Subscription.end` of each subscription that has one and is not off: when it passes the
    /// dispatcher asks for `off` (a timer apart from the retry/heartbeat one).
    ends: BTreeSet<(Instant, Key)>,
    end_of: HashMap<Key, Instant>,
    logged: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Router {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut done_rx: mpsc::UnboundedReceiver<Report>,
    ) {
        loop {
            let next = match (self.timers.first(), self.ends.first()) {
                (Some((a, _)), Some((b, _))) => Some(*a.min(b)),
                (a, b) => a.or(b).map(|(t, _)| *t),
            };
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(report) = done_rx.recv() => match report {
                    Report::Attempt(done) => self.finished(done),
                    Report::CursorDurable(key) => {
                        if let Some(e) = self.subs.get_mut(&key) {
                            e.in_flight = false;
                        }
                        self.consider(&key);
                    }
                },
                _ = sleep => self.fire_timers(),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Upsert {
                tenant,
                version,
                sub,
            } => {
                let key = (tenant, sub.id.clone());
                let sub = *sub;
                match self.subs.get_mut(&key) {
                    Some(e) => {
                        let re_requested = sub.status == SubscriptionStatus::Requested
                            && e.sub.status != SubscriptionStatus::Requested;
                        let moved = sub.channel.endpoint != e.sub.channel.endpoint;
                        if re_requested || moved {
                            // The client asked again (or pointed elsewhere): verify the
                            // endpoint anew and forget the old failure streak. The cursor
                            // stays: nothing queued is dropped.
                            e.state.verified = false;
                            e.state.parked = false;
                            e.state.consecutive_failures = 0;
                            e.state.next_attempt_at_ms = None;
                            e.state.failing_since_ms = None;
                            persist(&self.store, &key, &e.state);
                        }
                        e.sub = sub;
                        e.version = version;
                        e.asked_status = None;
                        // The `error` this dispatcher asked for can land after the next
                        // notification already succeeded (the success saw `active` and asked
                        // nothing): delivery has recovered, so ask for `active` again.
                        let recovered = e.sub.status == SubscriptionStatus::Error
                            && e.state.verified
                            && e.state.consecutive_failures == 0
                            && e.state.last_error.is_none();
                        if recovered {
                            self.ask(&key, SubscriptionStatus::Active, None);
                        }
                    }
                    None => {
                        let state = match self.store.delivery_state(&key.0, &key.1) {
                            Ok(s) => s,
                            Err(err) => {
                                tracing::error!(tenant = %key.0, subscription = %key.1, error = %err, "cannot read delivery state");
                                DeliveryState::default()
                            }
                        };
                        // A handshake accepted just before a crash may have lost its status
                        // write: the endpoint is verified, so finish the transition.
                        let stuck = state.verified && sub.status == SubscriptionStatus::Requested;
                        self.subs.insert(
                            key.clone(),
                            Entry {
                                version,
                                sub,
                                state,
                                in_flight: false,
                                asked_status: None,
                            },
                        );
                        if stuck {
                            self.ask(&key, SubscriptionStatus::Active, None);
                        }
                    }
                }
                self.schedule_end(&key);
                self.consider(&key);
            }
            Command::Remove(key) => {
                self.subs.remove(&key);
                self.durable.remove(&key);
                self.clear_timer(&key);
                self.clear_end(&key);
                if let Err(e) = self.store.remove_delivery_state(&key.0, &key.1) {
                    tracing::warn!(error = %e, "cannot remove delivery state");
                }
            }
            Command::Wake(key, upto) => {
                let d = self.durable.entry(key.clone()).or_default();
                *d = (*d).max(upto);
                self.consider(&key);
            }
            Command::Redrive(key) => {
                if let Some(e) = self.subs.get_mut(&key) {
                    e.state.parked = false;
                    e.state.consecutive_failures = 0;
                    e.state.next_attempt_at_ms = None;
                    e.state.failing_since_ms = None;
                    persist(&self.store, &key, &e.state);
                }
                self.clear_timer(&key);
                self.consider(&key);
            }
        }
    }

    fn set_timer(&mut self, key: &Key, at_ms: u64) {
        let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
        let at = Instant::now() + wait;
        self.clear_timer(key);
        self.timers.insert((at, key.clone()));
        self.timer_of.insert(key.clone(), at);
    }

    fn clear_timer(&mut self, key: &Key) {
        if let Some(old) = self.timer_of.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
    }

    /// (Re)arms the end timer of `key` from its `Subscription.end`; one already passed asks for
    /// `off` at once.
    fn schedule_end(&mut self, key: &Key) {
        self.clear_end(key);
        let Some(e) = self.subs.get(key) else { return };
        if matches!(
            e.sub.status,
            SubscriptionStatus::Off | SubscriptionStatus::EnteredInError
        ) {
            return;
        }
        let Some(end_ms) = e.sub.end_ms() else { return };
        let now = now_ms();
        let end_ms = u64::try_from(end_ms).unwrap_or(0);
        if end_ms <= now {
            self.ask(key, SubscriptionStatus::Off, None);
            return;
        }
        let at = Instant::now() + Duration::from_millis(end_ms - now);
        self.ends.insert((at, key.clone()));
        self.end_of.insert(key.clone(), at);
    }

    fn clear_end(&mut self, key: &Key) {
        if let Some(old) = self.end_of.remove(key) {
            self.ends.remove(&(old, key.clone()));
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((t, _)) = self.ends.first() {
            if *t > now {
                break;
            }
            let Some((_, key)) = self.ends.pop_first() else {
                break;
            };
            self.end_of.remove(&key);
            tracing::info!(tenant = %key.0, subscription = %key.1, "Subscription.end has passed: turning it off");
            self.ask(&key, SubscriptionStatus::Off, None);
        }
        while let Some((t, _)) = self.timers.first() {
            if *t > now {
                break;
            }
            let Some((_, key)) = self.timers.pop_first() else {
                break;
            };
            self.timer_of.remove(&key);
            self.consider(&key);
        }
    }

    /// Decides whether `key` has something to send now, and starts it.
    fn consider(&mut self, key: &Key) {
        let now = now_ms();
        let Some(e) = self.subs.get(key) else { return };
        if e.in_flight
            || e.sub.channel.kind != ChannelType::RestHook
            || !matches!(
                e.sub.status,
                SubscriptionStatus::Requested
                    | SubscriptionStatus::Active
                    | SubscriptionStatus::Error
            )
            || e.state.parked
        {
            return;
        }
        if e.sub.end_ms().is_some_and(|end| end <= now as i64) {
            // Past its end: nothing more is sent; the end timer asked for `off`.
            return;
        }
        if let Some(t) = e.state.next_attempt_at_ms
            && t > now
        {
            self.set_timer(key, t);
            return;
        }
        let job = if !e.state.verified {
            Job::Handshake
        } else {
            // Never above what is durable (the store may already hold newer events of writes
            // still waiting for their flush).
            let count = self.durable.get(key).copied().unwrap_or(0);
            if count > e.state.acked {
                let max = u64::from(
                    e.sub
                        .channel
                        .max_count
                        .unwrap_or(self.cfg.default_max_count)
                        .max(1),
                );
                Job::Events(e.state.acked + 1, count.min(e.state.acked + max))
            } else if let Some(period) = e.sub.channel.heartbeat_period.filter(|p| *p > 0) {
                let due = e.state.last_sent_at_ms.unwrap_or(now) + u64::from(period) * 1000;
                if now >= due {
                    Job::Heartbeat
                } else {
                    self.set_timer(key, due);
                    return;
                }
            } else {
                return;
            }
        };
        self.clear_timer(key);
        let Some(base_url) = self.base_urls.get(&key.0).cloned() else {
            return;
        };
        let Some(e) = self.subs.get_mut(key) else {
            return;
        };
        e.in_flight = true;
        let attempt = Attempt {
            store: self.store.clone(),
            hook: self.hook.clone(),
            key: key.clone(),
            version: e.version,
            base_url,
            sub: e.sub.clone(),
            job,
            durable: self.durable.get(key).copied().unwrap_or(0),
            state: e.state.clone(),
            timeout: Duration::from_secs(
                e.sub
                    .channel
                    .timeout
                    .map_or(self.cfg.default_timeout_secs, u64::from)
                    .max(1),
            ),
        };
        let done_tx = self.done_tx.clone();
        tokio::spawn(async move {
            let done = attempt.run().await;
            let _ = done_tx.send(Report::Attempt(done));
        });
    }

    /// Requests a status change from the server, once per target status.
    fn ask(&mut self, key: &Key, status: SubscriptionStatus, error: Option<String>) {
        let Some(e) = self.subs.get_mut(key) else {
            return;
        };
        if e.sub.status == status || e.asked_status == Some(status) {
            return;
        }
        e.asked_status = Some(status);
        let _ = self.status_tx.send(StatusChange {
            tenant: key.0.clone(),
            subscription: key.1.clone(),
            status,
            error,
        });
    }

    fn finished(&mut self, done: Done) {
        let now = now_ms();
        let (first, last) = match done.job {
            Job::Events(a, b) => (a, b),
            _ => (0, 0),
        };
        let attempt = AttemptRecord {
            at_ms: now,
            at: herald_store::now_instant(),
            tenant: done.key.0.clone(),
            subscription: done.key.1.clone(),
            notification_type: done.job.kind().code().to_owned(),
            events: if first > 0 {
                (first..=last).collect()
            } else {
                Vec::new()
            },
            outcome: if done.sent.failure.is_none() {
                "delivered"
            } else {
                "failed"
            }
            .to_owned(),
            http_status: done.sent.status,
            error: done.sent.error.clone(),
            latency_ms: done.sent.latency.as_secs_f64() * 1000.0,
            response_body: done.sent.body.clone(),
            request_headers: done.sent.headers.clone(),
            endpoint: done.endpoint.clone(),
        };
        if let Err(e) = self.store.record_attempt(&attempt) {
            tracing::warn!(error = %e, "cannot log delivery attempt");
        }
        self.logged += 1;
        if self.logged.is_multiple_of(1000)
            && let Err(e) = self.store.prune_attempts(self.cfg.attempt_log_max)
        {
            tracing::warn!(error = %e, "cannot prune the delivery log");
        }
        let key = done.key;
        let Some(e) = self.subs.get_mut(&key) else {
            return;
        };
        e.in_flight = false;
        e.state.last_attempt_at_ms = Some(now);
        let mut ask: Option<(SubscriptionStatus, Option<String>)> = None;
        match done.sent.failure {
            None => {
                e.state.consecutive_failures = 0;
                e.state.next_attempt_at_ms = None;
                e.state.last_error = None;
                e.state.failing_since_ms = None;
                e.state.last_sent_at_ms = Some(now);
                match done.job {
                    Job::Handshake => {
                        e.state.verified = true;
                        ask = Some((SubscriptionStatus::Active, None));
                    }
                    Job::Events(_, last) => {
                        e.state.acked = e.state.acked.max(last);
                        if e.sub.status == SubscriptionStatus::Error {
                            ask = Some((SubscriptionStatus::Active, None));
                        }
                    }
                    Job::Heartbeat => {}
                }
            }
            Some(failure) => {
                e.state.consecutive_failures += 1;
                let reason = done.sent.error.clone().unwrap_or_else(|| "failed".into());
                e.state.last_error = Some(reason.clone());
                let since = *e.state.failing_since_ms.get_or_insert(now);
                let delay = self.policy.next_delay(
                    e.state.consecutive_failures,
                    failure,
                    done.sent.retry_after,
                    Duration::from_millis(now.saturating_sub(since)),
                    fastrand::f64(),
                );
                match delay {
                    Some(d) => e.state.next_attempt_at_ms = Some(now + d.as_millis() as u64),
                    None => {
                        e.state.parked = true;
                        e.state.next_attempt_at_ms = None;
                        tracing::warn!(tenant = %key.0, subscription = %key.1, "retry horizon passed: delivery parked until redriven");
                    }
                }
                let handshake = matches!(done.job, Job::Handshake);
                if handshake
                    || failure.is_permanent()
                    || e.state.consecutive_failures >= self.cfg.error_after_failures
                {
                    let why = if handshake {
                        format!("handshake failed: {reason}")
                    } else {
                        reason
                    };
                    ask = Some((SubscriptionStatus::Error, Some(why)));
                }
            }
        }
        persist(&self.store, &key, &e.state);
        let acked = e.state.acked;
        // A delivered batch moved the cursor: make that durable before the next batch goes, so
        // a crash can redeliver at most the batch that was in flight.
        let cursor_moved = done.sent.failure.is_none() && matches!(done.job, Job::Events(..));
        if cursor_moved {
            e.in_flight = true;
        }
        if let Some((status, error)) = ask {
            self.ask(&key, status, error);
        }
        if cursor_moved {
            let store = self.store.clone();
            let done_tx = self.done_tx.clone();
            // Events already recorded beyond the cursor (durable or still syncing) wait for
            // this cursor: sync it now, alongside their writes' syncs. Otherwise the next batch
            // is a write away; the cursor rides along with that write's sync, or after a moment
            // gets one of its own.
            let waiting = self
                .store
                .recorded_event_count(&key.0, &key.1)
                .is_ok_and(|n| n > acked);
            tokio::spawn(async move {
                let synced = if waiting {
                    store.make_durable().await
                } else {
                    store.make_durable_lazily(CURSOR_PATIENCE).await
                };
                if let Err(e) = synced {
                    tracing::error!(error = %e, "cannot flush the delivery cursor");
                }
                let _ = done_tx.send(Report::CursorDurable(key));
            });
        } else {
            self.consider(&key);
        }
    }
}

fn persist(store: &Store, key: &Key, state: &DeliveryState) {
    if let Err(e) = store.put_delivery_state(&key.0, &key.1, state) {
        tracing::error!(tenant = %key.0, subscription = %key.1, error = %e, "cannot store delivery state");
    }
}

struct Attempt {
    store: Arc<Store>,
    hook: RestHook,
    key: Key,
    version: FhirVersion,
    base_url: String,
    sub: Subscription,
    job: Job,
    /// The durable event count when the attempt started.
    durable: u64,
    /// The subscription's delivery state when the attempt started (its errors go into the
    /// notification; the dispatcher's copy is the current one, the store's may lag a sync).
    state: DeliveryState,
    timeout: Duration,
}

impl Attempt {
    async fn run(self) -> Done {
        let endpoint = self.sub.channel.endpoint.clone().unwrap_or_default();
        let sent = match self.bundle() {
            Ok(bundle) => {
                self.hook
                    .post(
                        &endpoint,
                        &self.sub.channel.content_type,
                        &self.sub.channel.headers,
                        self.timeout,
                        &bundle,
                    )
                    .await
            }
            Err(e) => Sent {
                failure: Some(Failure::Transport),
                status: None,
                error: Some(format!("internal: cannot build the notification: {e}")),
                retry_after: None,
                latency: Duration::ZERO,
                body: None,
                headers: Vec::new(),
            },
        };
        Done {
            key: self.key,
            job: self.job,
            endpoint,
            sent,
        }
    }

    fn bundle(&self) -> Result<serde_json::Value, herald_store::StoreError> {
        let (tenant, id) = (&self.key.0, &self.key.1);
        let content = self.sub.channel.content;
        let events = match self.job {
            Job::Events(first, last) => {
                let stored = self.store.events(tenant, id, Some(first), Some(last))?;
                materialize(&self.store, tenant, &stored, content)?
            }
            _ => Vec::new(),
        };
        let errors = error_concepts(self.sub.status, &self.state);
        let mut sref = subscription_ref(&self.base_url, &self.sub);
        if matches!(self.job, Job::Handshake) {
            sref.status = SubscriptionStatus::Requested.code().to_owned();
        }
        Ok(build_notification(&NotificationInput {
            version: self.version,
            kind: self.job.kind(),
            subscription: &sref,
            // An event notification's counter is its highest event number (spec §1.H item
            // 48): events committed while it is being built belong to a later notification.
            events_since_start: match self.job {
                Job::Events(_, last) => last,
                _ => self.durable,
            },
            events: &events,
            content,
            errors,
            bundle_id: uuid::Uuid::new_v4().to_string(),
            timestamp: herald_store::now_instant(),
        }))
    }
}
