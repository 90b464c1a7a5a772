//! Forwarding a broadcast feed (deliveries, runs) to one watcher's stream:
//! only what its filter keeps, never blocking the feed. A watcher too slow
//! for its buffer, or for the broadcast, loses those changes and is told how
//! many with the next one it gets; so is one whose feed lost another node's
//! changes on the way (`feed::Changes`). Shutdown ends every stream, so a
//! watcher never holds up the daemon's exit.

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::feed::Changes;

/// Copies changes to `tx` until the watcher goes away. `update` turns a
/// change into the message, given how many were missed before it, or
/// `None` when the watcher's filter leaves it out.
pub async fn forward<C, U>(
    mut changes: Changes<C>,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<U, Status>>,
    update: impl Fn(&C, u64) -> Option<U>,
) {
    let mut missed = 0u64;
    loop {
        let change = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
            change = changes.recv() => change,
        };
        match change {
            Ok(change) => {
                let Some(message) = update(&change, missed) else {
                    continue;
                };
                match tx.try_send(Ok(message)) {
                    Ok(()) => missed = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => missed += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
