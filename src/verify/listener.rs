//! PostgreSQL `LISTEN keysmith_invalidate`: what another instance announced
//! (see `store::invalidation`) reaches this instance's cache.
//!
//! Notifications sent while the listener is disconnected are lost, so each
//! (re)connection starts by dropping the whole cache, and while disconnected
//! the verifier re-reads cached tokens instead of trusting them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::Verifier;
use crate::store::invalidation::{CHANNEL, Invalidation};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

pub(super) async fn run(verifier: Arc<Verifier>, url: String, mut stop: watch::Receiver<bool>) {
    let mut retry = MIN_RETRY;
    loop {
        let connected = tokio::select! {
            c = tokio::time::timeout(CONNECT_TIMEOUT, connect(&url)) => c,
            _ = stop.changed() => return,
        };
        match connected {
            Ok(Ok(mut listener)) => {
                // LISTEN is active: from here on nothing is missed. What was
                // cached before may have missed something, so it goes.
                verifier.clear();
                verifier.set_listening(true);
                retry = MIN_RETRY;
                tracing::info!("listening for token invalidations");
                loop {
                    let received = tokio::select! {
                        r = listener.try_recv() => r,
                        _ = stop.changed() => return,
                    };
                    match received {
                        Ok(Some(notification)) => {
                            match Invalidation::from_payload(notification.payload()) {
                                Some(what) => verifier.invalidate(&what),
                                None => verifier.clear(),
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(
                                "invalidation listener lost its connection; reconnecting"
                            );
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "invalidation listener failed; reconnecting");
                            break;
                        }
                    }
                }
                verifier.set_listening(false);
            }
            Ok(Err(e)) => {
                verifier.set_listening(false);
                tracing::warn!(error = %e, "invalidation listener cannot connect; retrying");
            }
            Err(_) => {
                verifier.set_listening(false);
                tracing::warn!("invalidation listener timed out connecting; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
