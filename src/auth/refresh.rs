//! Temporary credentials cached and refreshed on a background schedule: well before they
//! expire (a quarter of their lifetime, at least 30 s, before), so uploads never wait on STS;
//! a failed refresh retries with backoff while the current credentials stay valid.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};

use super::AuthError;
use super::clock::Clock;
use crate::store::BoxFuture;
use crate::telemetry::{DestinationLabel, METRICS};

/// Credentials with their expiry, as a fetch returns them.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub credentials: Credentials,
    pub expiry: Option<SystemTime>,
    /// Who these credentials are, when STS says (the assumed role's session ARN).
    pub identity: Option<String>,
}

/// Something that can obtain fresh credentials (an STS call).
pub trait Fetch: Send + Sync + fmt::Debug {
    /// Obtains new credentials.
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched, AuthError>>;
}

/// Credentials this close to expiry are not handed out any more.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);
const MIN_LEAD: Duration = Duration::from_secs(30);
/// Never refresh sooner than this after a fetch: with a clock far ahead of STS, fresh
/// credentials already look expired, and the schedule must not turn into a busy loop on STS.
const MIN_GAP: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Current {
    fetched: Fetched,
    /// When the background task fetches again.
    refresh_at: SystemTime,
}

struct Inner {
    destination: String,
    source: Box<dyn Fetch>,
    clock: Arc<dyn Clock>,
    refreshes: AtomicU64,
    failures: AtomicU64,
    current: RwLock<Option<Current>>,
    /// One fetch at a time, whether from the schedule or from a caller with nothing cached.
    fetching: tokio::sync::Mutex<()>,
}

/// A credentials provider backed by a `Fetch` (this module's way to get credentials), refreshed
/// in the background.
#[derive(Clone)]
pub struct RefreshingCredentials {
    inner: Arc<Inner>,
}

impl fmt::Debug for RefreshingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingCredentials")
            .field("destination", &self.inner.destination)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

fn refresh_time(now: SystemTime, expiry: Option<SystemTime>) -> SystemTime {
    let Some(expiry) = expiry else {
        // No expiry: refresh hourly anyway, in case the source rotates.
        return now + Duration::from_secs(3600);
    };
    let lifetime = expiry.duration_since(now).unwrap_or_default();
    let lead = (lifetime / 4).max(MIN_LEAD).min(lifetime / 2);
    (expiry - lead).max(now + MIN_GAP)
}

impl Inner {
    fn usable(&self) -> Option<Credentials> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let c = current.as_ref()?;
        let valid = c
            .fetched
            .expiry
            .is_none_or(|e| e > self.clock.now() + EXPIRY_SLACK);
        valid.then(|| c.fetched.credentials.clone())
    }

    fn expiry(&self) -> Option<SystemTime> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().and_then(|c| c.fetched.expiry)
    }

    fn refresh_at(&self) -> Option<SystemTime> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|c| c.refresh_at)
    }

    async fn refresh(&self) -> Result<Credentials, AuthError> {
        let fetched = self.source.fetch().await?;
        let now = self.clock.now();
        let refresh_at = refresh_time(now, fetched.expiry);
        let credentials = fetched.credentials.clone();
        tracing::debug!(destination = %self.destination,
            expires_in_s = fetched.expiry.and_then(|e| e.duration_since(now).ok()).map(|d| d.as_secs()),
            refresh_in_s = refresh_at.duration_since(now).unwrap_or_default().as_secs(),
            "credentials refreshed");
        METRICS.credential_refreshes.inc();
        if let Some(secs) = fetched
            .expiry
            .and_then(|e| e.duration_since(std::time::UNIX_EPOCH).ok())
        {
            METRICS
                .credential_expiry
                .get_or_create(&DestinationLabel::new(&self.destination))
                .set(secs.as_secs() as i64);
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Current {
            fetched,
            refresh_at,
        });
        Ok(credentials)
    }
}

impl RefreshingCredentials {
    /// Starts the background refresh for `destination` (it ends when the provider is dropped),
    /// scheduled by `clock`. The first fetch happens at once, in the background.
    pub fn start(destination: &str, source: impl Fetch + 'static, clock: Arc<dyn Clock>) -> Self {
        let inner = Arc::new(Inner {
            destination: destination.to_string(),
            source: Box::new(source),
            clock,
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Current credentials, fetching now only if none are valid (start-up, or every refresh
    /// failed until expiry).
    pub async fn credentials(&self) -> Result<Credentials, AuthError> {
        if let Some(c) = self.inner.usable() {
            return Ok(c);
        }
        let _one = self.inner.fetching.lock().await;
        if let Some(c) = self.inner.usable() {
            return Ok(c);
        }
        self.inner.refresh().await
    }

    /// Successful fetches so far (the first one included).
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Failed background refreshes so far.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// When the current credentials expire, if any are cached.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.inner.expiry()
    }

    /// Who the current credentials are, when STS said (the assumed role's session ARN).
    pub fn identity(&self) -> Option<String> {
        let current = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().and_then(|c| c.fetched.identity.clone())
    }
}

async fn refresh_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        // Wait for the scheduled time by the refresher's clock, re-reading it whenever the
        // clock wakes the sleep (a test clock that jumps forward).
        loop {
            let (clock, at) = {
                let Some(inner) = weak.upgrade() else { return };
                match inner.refresh_at() {
                    Some(at) if at > inner.clock.now() => (inner.clock.clone(), at),
                    _ => break,
                }
            };
            clock.sleep_until(at).await;
        }
        let Some(inner) = weak.upgrade() else { return };
        let result = {
            let _one = inner.fetching.lock().await;
            // A caller with nothing cached may have fetched while this waited for the lock.
            if inner.refresh_at().is_some_and(|at| at > inner.clock.now()) {
                continue;
            }
            inner.refresh().await
        };
        match result {
            Ok(_) => backoff = Duration::from_secs(1),
            Err(error) => {
                METRICS.credential_refresh_failures.inc();
                inner.failures.fetch_add(1, Ordering::Relaxed);
                let valid_for = inner
                    .expiry()
                    .and_then(|e| e.duration_since(inner.clock.now()).ok());
                match valid_for {
                    Some(valid) => tracing::error!(destination = %inner.destination, %error,
                        current_valid_for_s = valid.as_secs(), retry_in_s = backoff.as_secs(),
                        "credential refresh failed; the current credentials are used while they last"),
                    None => tracing::error!(destination = %inner.destination, %error,
                        retry_in_s = backoff.as_secs(),
                        "cannot obtain credentials; uploads to this destination wait until it works"),
                }
                let clock = inner.clock.clone();
                drop(inner);
                let until = clock.now() + backoff;
                while clock.now() < until {
                    clock.sleep_until(until).await;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl ProvideCredentials for RefreshingCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_a_quarter_of_the_lifetime_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = refresh_time(now, Some(now + Duration::from_secs(3600)));
        assert_eq!(hour, now + Duration::from_secs(2700));
        let short = refresh_time(now, Some(now + Duration::from_secs(40)));
        assert_eq!(short, now + Duration::from_secs(20));
        // Already expired by this clock (skew): soon, but not in a busy loop.
        let expired = refresh_time(now, Some(now - Duration::from_secs(5)));
        assert_eq!(expired, now + MIN_GAP);
    }
}
