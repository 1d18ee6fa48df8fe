//! The webhook subscriptions: what each one is, where its delivery stands, one delivery task
//! per subscription, and the file that keeps them across restarts.
//!
//! Each enabled subscription has its own task ([`deliver`]) reading the log through a
//! [`Follower`], so a slow or dead endpoint costs its own task a wait and nobody else anything:
//! the log is the only buffer, and the subscription's cursor is all it holds. One batch is in
//! flight at a time and the same batch is POSTed again until an answer settles it, so its
//! `webhook-id` holds across redeliveries.
//!
//! Durability: creating, replacing and deleting a subscription are answered only once the
//! state file (`webhooks.json` beside the durable log) holds the change. Delivery progress
//! is written behind, at most every [`SAVE_EVERY`] and at shutdown: a crash can lose the last
//! moves of a cursor, so a batch may come again, never be skipped (at least once).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, info, info_span, warn};

use super::{
    allow::AllowList,
    backoff::Backoff,
    delivery::{self, Outcome, WebhookBatch},
    secret::Secret,
};
use crate::{
    api::Api,
    error::Error,
    follow::Follower,
    log::{Event, ReadLimits, TopicFilter},
    metrics::{Metrics, Transport},
};

/// The state file's name in the data directory.
pub const STATE_FILE: &str = "webhooks.json";

/// How often delivery progress is written to the state file while cursors move: the most a
/// crash can make the producer deliver again, in time.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);

/// At shutdown, how long a webhook POST in flight may still take to be answered.
const FINISH_IN_FLIGHT: Duration = Duration::from_secs(1);

/// Most subscriptions one producer keeps: each has a task and a connection, and whoever may
/// create them should not be able to make the producer open a million.
pub const MAX_WEBHOOKS: usize = 1_000;

/// Longest webhook id.
pub const MAX_ID_LEN: usize = 64;

/// How the producer delivers, from its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where webhooks may go (`--webhook-allow`).
    pub allow: Arc<AllowList>,
    /// What `https://` deliveries trust and present (`--webhook-ca`, the producer's own
    /// certificate).
    pub tls: delivery::ClientTls,
    /// How long one POST may take (`--webhook-timeout`).
    pub timeout: Duration,
    /// Delays between attempts (`--webhook-retry-min`, `--webhook-retry-max`).
    pub backoff: Backoff,
    /// A subscription failing for this long is disabled (`--webhook-disable-after`).
    pub disable_after: Duration,
    /// How much one batch may carry (`--webhook-max-batch-events`, `--webhook-max-batch-bytes`).
    pub batch: ReadLimits,
    /// The state file; `None` keeps subscriptions in memory only (`--store memory`).
    pub state_file: Option<PathBuf>,
}

/// One subscription and where its delivery stands: what `WebhookService` returns (less the
/// secret) and what the state file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub webhook_id: String,
    pub url: String,
    pub topics: Vec<String>,
    /// `whsec_…`: written to the state file (which only the producer's user can read), never
    /// returned after creation, never logged.
    pub secret: String,
    /// Every event up to here was delivered or filtered out.
    pub delivered_sequence: u64,
    pub log_id: String,
    pub enabled: bool,
    pub disabled_reason: String,
    pub created_at: SystemTime,
    pub last_attempt_at: Option<SystemTime>,
    pub last_error: String,
    pub next_attempt_at: Option<SystemTime>,
    pub consecutive_failures: u32,
    pub failing_since: Option<SystemTime>,
    pub batches_delivered: u64,
    pub events_delivered: u64,
}

/// What a client asks for when it creates a subscription; validated by [`Webhooks::create`].
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// Empty: one is generated.
    pub webhook_id: String,
    pub url: String,
    pub topics: Vec<String>,
    /// As in Subscribe: unset, the head; 0, the oldest retained event.
    pub after_sequence: Option<u64>,
    /// Empty: one is generated.
    pub secret: String,
    pub replace: bool,
}

/// What [`Webhooks::create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    pub webhook: Subscription,
    /// The secret, shown this once.
    pub secret: String,
    pub replaced: bool,
}

/// The state file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    webhooks: Vec<Subscription>,
}

const STATE_VERSION: u32 = 1;

/// The producer's webhook subscriptions: a cheap `Clone` handle.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: Api,
    settings: Settings,
    client: reqwest::Client,
    metrics: Metrics,
    /// A std mutex: held only to read or change a few fields, never across an `.await`.
    subscriptions: Mutex<BTreeMap<String, Entry>>,
    /// Serializes writes of the state file, and makes a create, replace or delete (which
    /// write first and change the map after) one step: two writers never race on the file,
    /// and the file never holds an older state than one already answered.
    writing: tokio::sync::Mutex<()>,
    /// Rung when a cursor moved; the saver writes the file behind.
    moved: Notify,
    /// Delivery tasks, for shutdown to wait on.
    tasks: TaskTracker,
}

#[derive(Debug)]
struct Entry {
    subscription: Subscription,
    /// Stops this subscription's delivery task (a child of the producer's stop).
    cancel: CancellationToken,
    /// Bumped when the subscription is replaced: a task of an older generation writes nothing.
    generation: u64,
}

impl Webhooks {
    /// Loads the subscriptions from the state file (if any), starts a delivery task for each
    /// enabled one and the task that saves progress.
    pub async fn start(settings: Settings, api: Api, metrics: Metrics) -> Result<Self, String> {
        let loaded = match &settings.state_file {
            Some(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || load(&path))
                    .await
                    .map_err(|err| err.to_string())??
            }
            None => Vec::new(),
        };
        let client = delivery::client(&settings.allow, &settings.tls)?;
        let webhooks = Self {
            inner: Arc::new(Inner {
                api,
                settings,
                client,
                metrics,
                subscriptions: Mutex::default(),
                writing: tokio::sync::Mutex::default(),
                moved: Notify::new(),
                tasks: TaskTracker::new(),
            }),
        };
        if !loaded.is_empty() {
            info!(webhooks = loaded.len(), "webhook subscriptions loaded");
        }
        for subscription in loaded {
            webhooks.insert(subscription, 0);
        }
        webhooks.count();
        tokio::spawn(webhooks.clone().save_behind());
        Ok(webhooks)
    }

    /// Validates `new`, stores it durably and starts delivering to it.
    pub async fn create(&self, new: NewWebhook) -> Result<Created, Error> {
        self.inner.api.check_running()?;
        let webhook_id = if new.webhook_id.is_empty() {
            generate_id()
        } else {
            validate_id(&new.webhook_id)?;
            new.webhook_id
        };
        let url = self.inner.settings.allow.check_url(&new.url).await?;
        let filter = TopicFilter::new(new.topics)?;
        let secret = if new.secret.is_empty() {
            Secret::generate()
        } else {
            Secret::parse(&new.secret).map_err(|detail| Error::InvalidWebhook {
                field: "secret",
                detail,
            })?
        };
        let log = self.inner.api.log();
        let cursor = log.resolve_cursor(new.after_sequence)?;
        let subscription = Subscription {
            webhook_id: webhook_id.clone(),
            url: url.to_string(),
            topics: filter.topics().to_vec(),
            secret: secret.reveal(),
            delivered_sequence: cursor,
            log_id: log.log_id().to_owned(),
            enabled: true,
            disabled_reason: String::new(),
            created_at: SystemTime::now(),
            last_attempt_at: None,
            last_error: String::new(),
            next_attempt_at: None,
            consecutive_failures: 0,
            failing_since: None,
            batches_delivered: 0,
            events_delivered: 0,
        };

        let _writing = self.inner.writing.lock().await;
        let (replaced, generation) = {
            let map = self.lock();
            match map.get(&webhook_id) {
                Some(_) if !new.replace => return Err(Error::WebhookExists { id: webhook_id }),
                Some(old) => (true, old.generation + 1),
                None if map.len() >= MAX_WEBHOOKS => {
                    return Err(Error::InvalidWebhook {
                        field: "webhook_id",
                        detail: format!(
                            "the producer already has {MAX_WEBHOOKS} webhook subscriptions, the most it keeps; delete one first"
                        ),
                    });
                }
                None => (false, 0),
            }
        };
        let mut state = self.snapshot();
        state.retain(|s| s.webhook_id != webhook_id);
        state.push(subscription.clone());
        self.write(state).await?;
        if let Some(old) = self.lock().remove(&webhook_id) {
            old.cancel.cancel();
        }
        self.insert(subscription.clone(), generation);
        self.count();
        info!(
            webhook_id = %webhook_id,
            url = %subscription.url,
            after_sequence = cursor,
            replaced,
            "webhook subscription created"
        );
        Ok(Created {
            webhook: redacted(subscription),
            secret: secret.reveal(),
            replaced,
        })
    }

    /// One subscription, without its secret.
    pub fn get(&self, webhook_id: &str) -> Result<Subscription, Error> {
        self.lock()
            .get(webhook_id)
            .map(|entry| redacted(entry.subscription.clone()))
            .ok_or_else(|| Error::WebhookNotFound {
                id: webhook_id.to_owned(),
            })
    }

    /// Every subscription, by id, without secrets.
    pub fn list(&self) -> Vec<Subscription> {
        self.lock()
            .values()
            .map(|entry| redacted(entry.subscription.clone()))
            .collect()
    }

    /// Removes a subscription (durably) and stops its delivery; a batch in flight is abandoned.
    pub async fn delete(&self, webhook_id: &str) -> Result<(), Error> {
        self.inner.api.check_running()?;
        let _writing = self.inner.writing.lock().await;
        if !self.lock().contains_key(webhook_id) {
            return Err(Error::WebhookNotFound {
                id: webhook_id.to_owned(),
            });
        }
        let mut state = self.snapshot();
        state.retain(|s| s.webhook_id != webhook_id);
        self.write(state).await?;
        if let Some(old) = self.lock().remove(webhook_id) {
            old.cancel.cancel();
        }
        self.count();
        info!(webhook_id, "webhook subscription deleted");
        Ok(())
    }

    /// Stops every delivery task (they also stop with the producer's stop signal) and writes
    /// where each cursor stands.
    pub async fn close(&self) {
        for entry in self.lock().values() {
            entry.cancel.cancel();
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let _writing = self.inner.writing.lock().await;
        if let Err(err) = self.write(self.snapshot()).await {
            warn!(%err, "could not save the webhook subscriptions at shutdown");
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner
            .subscriptions
            .lock()
            .expect("no code panics while holding the webhook map")
    }

    fn snapshot(&self) -> Vec<Subscription> {
        self.lock()
            .values()
            .map(|entry| entry.subscription.clone())
            .collect()
    }

    /// Adds `subscription` to the map, with a delivery task if it is enabled.
    fn insert(&self, subscription: Subscription, generation: u64) {
        let cancel = self.inner.api.stop().child_token();
        let id = subscription.webhook_id.clone();
        let enabled = subscription.enabled;
        // In the map before its task starts: the task's first step is to look itself up.
        self.lock().insert(
            id.clone(),
            Entry {
                subscription,
                cancel: cancel.clone(),
                generation,
            },
        );
        if enabled {
            let span = info_span!("webhook", webhook_id = %id);
            self.inner
                .tasks
                .spawn(deliver(self.clone(), id, generation, cancel).instrument(span));
        }
    }

    /// Changes subscription `id` if it is still the `generation` the caller delivers for;
    /// false once it was replaced or deleted (the caller then stops).
    fn update(&self, id: &str, generation: u64, change: impl FnOnce(&mut Subscription)) -> bool {
        let mut map = self.lock();
        match map.get_mut(id) {
            Some(entry) if entry.generation == generation => {
                change(&mut entry.subscription);
                true
            }
            _ => false,
        }
    }

    /// The subscription as its delivery task of `generation` sees it.
    fn current(&self, id: &str, generation: u64) -> Option<Subscription> {
        self.lock()
            .get(id)
            .filter(|entry| entry.generation == generation)
            .map(|entry| entry.subscription.clone())
    }

    /// Updates the subscriptions gauge.
    fn count(&self) {
        let (enabled, disabled) =
            self.lock().values().fold((0, 0), |(on, off), entry| {
                match entry.subscription.enabled {
                    true => (on + 1, off),
                    false => (on, off + 1),
                }
            });
        self.inner.metrics.webhook_subscriptions(enabled, disabled);
    }

    /// Writes `state` to the state file (if there is one); the caller holds `writing`.
    async fn write(&self, state: Vec<Subscription>) -> Result<(), Error> {
        let Some(path) = self.inner.settings.state_file.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || save(&path, state))
            .await
            .map_err(|err| err.to_string())
            .and_then(|saved| saved)
            .map_err(|detail| Error::StorageUnavailable {
                doing: "save the webhook subscriptions",
                detail,
            })
    }

    /// Writes delivery progress behind the deliveries: at most every [`SAVE_EVERY`], until
    /// the producer stops ([`Webhooks::close`] writes the last state).
    async fn save_behind(self) {
        let stop = self.inner.api.stop().clone();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inner.moved.notified() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SAVE_EVERY) => {}
            }
            let _writing = self.inner.writing.lock().await;
            if let Err(err) = self.write(self.snapshot()).await {
                warn!(%err, "could not save webhook delivery progress; retrying");
                self.inner.moved.notify_one();
            }
        }
    }
}

/// A copy without the secret, for answers.
fn redacted(mut subscription: Subscription) -> Subscription {
    subscription.secret.clear();
    subscription
}

/// `wh-` and 16 random letters and digits.
fn generate_id() -> String {
    use rand::{Rng as _, distr::Alphanumeric};
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    format!("wh-{random}")
}

/// 1 to [`MAX_ID_LEN`] characters from `[A-Za-z0-9-]`: safe in URLs, in logs, and in the
/// `webhook-id` header, where `_` separates the id from the batch's sequences.
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidWebhook {
            field: "webhook_id",
            detail: format!(
                "{:?}: an id is 1 to {MAX_ID_LEN} characters from [A-Za-z0-9-] (or empty for a generated one)",
                id.chars().take(MAX_ID_LEN + 8).collect::<String>()
            ),
        })
    }
}

/// Reads the state file; a missing file is no subscriptions.
fn load(path: &Path) -> Result<Vec<Subscription>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|err| {
        format!(
            "{} is not a webhook state file ({err}); move it away to start without subscriptions",
            path.display()
        )
    })?;
    if state.version != STATE_VERSION {
        return Err(format!(
            "{} has version {}, this producer reads version {STATE_VERSION}",
            path.display(),
            state.version
        ));
    }
    Ok(state.webhooks)
}

/// Writes the state file atomically and durably: a temporary file, fsynced, renamed over the
/// old one, and the directory fsynced, so a crash leaves the old state or the new, whole.
fn save(path: &Path, webhooks: Vec<Subscription>) -> Result<(), String> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let state = StateFile {
        version: STATE_VERSION,
        webhooks,
    };
    let bytes = serde_json::to_vec_pretty(&state).expect("subscriptions always serialize");
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Delivers subscription `id` (of `generation`) until it is disabled, replaced, deleted or
/// the producer stops.
async fn deliver(webhooks: Webhooks, id: String, generation: u64, cancel: CancellationToken) {
    let inner = &webhooks.inner;
    let log = inner.api.log().clone();
    let settings = &inner.settings;
    'follow: loop {
        let Some(subscription) = webhooks.current(&id, generation) else {
            return;
        };
        if !subscription.enabled || cancel.is_cancelled() {
            return;
        }
        let mut cursor = subscription.delivered_sequence;
        if subscription.log_id != log.log_id() {
            // Its cursor counts another log's events: start this one from its oldest.
            warn!(
                old_log_id = %subscription.log_id,
                log_id = %log.log_id(),
                "the log changed under the webhook subscription; delivering from its oldest event"
            );
            cursor = 0;
            let log_id = log.log_id().to_owned();
            webhooks.update(&id, generation, |s| {
                s.log_id = log_id;
                s.delivered_sequence = 0;
            });
        }
        let Ok(secret) = Secret::parse(&subscription.secret) else {
            disable(
                &webhooks,
                &id,
                generation,
                "its stored secret is not valid".into(),
            );
            return;
        };
        let filter = TopicFilter::new(subscription.topics.clone()).unwrap_or_default();
        let mut follower =
            match Follower::<Event>::new(log.clone(), filter, Some(cursor), settings.batch) {
                Ok(follower) => follower,
                Err(err) => {
                    if skip_expired(&webhooks, &id, generation, &err) {
                        continue 'follow;
                    }
                    // A cursor past the head of its own log: nothing to deliver it can trust.
                    disable(&webhooks, &id, generation, err.to_string());
                    return;
                }
            };
        loop {
            let batch = match follower.next_batch(None, &cancel).await {
                Ok(batch) if batch.events.is_empty() => continue,
                Ok(batch) => batch,
                Err(Error::ShuttingDown) => return,
                Err(err) => {
                    if skip_expired(&webhooks, &id, generation, &err) {
                        continue 'follow;
                    }
                    warn!(%err, "webhook delivery cannot read the log; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(settings.backoff.max) => continue 'follow,
                    }
                }
            };
            let batch = WebhookBatch::new(&id, cursor, &batch, log.log_id());
            loop {
                let started = SystemTime::now();
                webhooks.update(&id, generation, |s| s.last_attempt_at = Some(started));
                let timer = std::time::Instant::now();
                let attempt = delivery::attempt(
                    &inner.client,
                    &subscription.url,
                    &secret,
                    &batch,
                    settings.timeout,
                );
                tokio::pin!(attempt);
                let outcome = tokio::select! {
                    outcome = &mut attempt => outcome,
                    () = cancel.cancelled() => {
                        // Replaced or deleted: the batch is abandoned. The producer stopping:
                        // the POST in flight gets a moment to finish, so a 2xx it brings is
                        // recorded rather than delivered again after the restart.
                        if webhooks.current(&id, generation).is_none() {
                            return;
                        }
                        match tokio::time::timeout(FINISH_IN_FLIGHT, &mut attempt).await {
                            Ok(outcome) => outcome,
                            Err(_) => return,
                        }
                    }
                };
                inner
                    .metrics
                    .webhook_attempt(outcome.label(), timer.elapsed());
                match outcome {
                    Outcome::Delivered => {
                        let events = batch.events.len() as u64;
                        let next = batch.next_after_sequence;
                        if !webhooks.update(&id, generation, |s| {
                            s.delivered_sequence = next;
                            s.batches_delivered += 1;
                            s.events_delivered += events;
                            s.consecutive_failures = 0;
                            s.failing_since = None;
                            s.last_error.clear();
                            s.next_attempt_at = None;
                        }) {
                            return;
                        }
                        inner.metrics.delivered(Transport::Webhook, events as usize);
                        inner.moved.notify_one();
                        cursor = next;
                        break;
                    }
                    Outcome::Gone { error } => {
                        disable(
                            &webhooks,
                            &id,
                            generation,
                            format!("the endpoint answered {error}: it takes no more deliveries"),
                        );
                        return;
                    }
                    Outcome::Retry { error, retry_after } => {
                        let now = SystemTime::now();
                        let mut failures = 0;
                        let mut since = now;
                        webhooks.update(&id, generation, |s| {
                            s.consecutive_failures += 1;
                            failures = s.consecutive_failures;
                            since = *s.failing_since.get_or_insert(started);
                            s.last_error = error.clone();
                        });
                        let failing_for = now.duration_since(since).unwrap_or_default();
                        if failing_for >= settings.disable_after {
                            disable(
                                &webhooks,
                                &id,
                                generation,
                                format!(
                                    "failing for {} (--webhook-disable-after {}); last error: {error}",
                                    humantime::format_duration(Duration::from_secs(
                                        failing_for.as_secs()
                                    )),
                                    humantime::format_duration(settings.disable_after)
                                ),
                            );
                            return;
                        }
                        let delay = match retry_after {
                            Some(asked) => settings.backoff.honour(asked),
                            None => settings.backoff.next(failures),
                        };
                        webhooks.update(&id, generation, |s| s.next_attempt_at = Some(now + delay));
                        info!(
                            %error,
                            failures,
                            retry_in = %humantime::format_duration(delay),
                            after_sequence = batch.after_sequence,
                            "webhook delivery failed; will retry"
                        );
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }
}

/// When retention overtook the cursor (a subscription that failed for long), moves it to just
/// before the oldest retained event and says so in `last_error`: the receiver sees a batch
/// that starts past its own cursor, Polls, and learns from CURSOR_EXPIRED what it missed.
/// True when it did.
fn skip_expired(webhooks: &Webhooks, id: &str, generation: u64, err: &Error) -> bool {
    let Error::CursorExpired { after, oldest, .. } = err else {
        return false;
    };
    let (after, resume) = (*after, oldest - 1);
    warn!(
        after_sequence = after,
        oldest_sequence = oldest,
        "retention dropped undelivered events; the webhook subscription skips them"
    );
    webhooks.update(id, generation, |s| {
        s.delivered_sequence = resume;
        s.last_error = format!(
            "events {}..={resume} were dropped by retention before they could be delivered",
            after + 1
        );
    });
    webhooks.inner.moved.notify_one();
    true
}

/// Disables the subscription, saying why; its cursor is kept (replace it to start again).
fn disable(webhooks: &Webhooks, id: &str, generation: u64, reason: String) {
    warn!(reason = %reason, "webhook subscription disabled");
    webhooks.update(id, generation, |s| {
        s.enabled = false;
        s.disabled_reason = reason;
        s.next_attempt_at = None;
    });
    webhooks.count();
    webhooks.inner.moved.notify_one();
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn state_file() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (0u32..3, prop::collection::vec(any::<String>(), 0..2)).prop_map(|(version, ids)| {
                let webhooks: Vec<_> = ids
                    .iter()
                    .map(|id| serde_json::json!({"webhook_id": id, "url": "http://127.0.0.1:1/"}))
                    .collect();
                serde_json::json!({"version": version, "webhooks": webhooks})
                    .to_string()
                    .into_bytes()
            }),
            Just(br#"{"version":1,"webhooks":[]}"#.to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `webhooks.json` as found on disk: subscriptions, or a refusal naming the file.
        #[test]
        fn any_state_file_is_read_or_refused_by_name(bytes in state_file()) {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("webhooks.json");
            std::fs::write(&path, &bytes).unwrap();
            match load(&path) {
                Ok(webhooks) => {
                    let state: StateFile = serde_json::from_slice(&bytes).unwrap();
                    prop_assert_eq!(state.version, STATE_VERSION);
                    prop_assert_eq!(webhooks, state.webhooks);
                }
                Err(err) => prop_assert!(err.starts_with(&path.display().to_string()), "{err}"),
            }
        }
    }
}
