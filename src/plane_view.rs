//! What the agent knows of a host's health from its own requests: whether the last
//! one found it down (no answer, a 5xx, a 429), and a way to wait until one finds
//! it answering again (protocol.md section 3, "One view of the plane").
//!
//! The heartbeat loop's attempts are the probes; the token refresher reads the view
//! of the control plane before it asks, and stands aside while the plane is down,
//! so that a plane in trouble gets one agent's probes, not two schedules.

use tokio::sync::watch;

/// One host's health as the agent's last request to it found it.
#[derive(Debug)]
pub struct HostView {
    down: watch::Sender<bool>,
}

impl Default for HostView {
    fn default() -> Self {
        Self {
            down: watch::Sender::new(false),
        }
    }
}

impl HostView {
    /// What a request just found: the host down, or answering (an error status
    /// other than 5xx and 429 is an answer).
    pub fn found(&self, down: bool) {
        self.down.send_if_modified(|was| {
            let changed = *was != down;
            *was = down;
            changed
        });
    }

    /// Whether the last request found the host down.
    #[cfg(test)]
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Returns at once if the host is not down, else when a request finds it
    /// answering.
    pub async fn until_answering(&self) {
        let mut down = self.down.subscribe();
        // Err: the sender is gone with the client; nothing left to wait for.
        let _ = down.wait_for(|down| !down).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn until_answering_waits_for_a_request_that_finds_the_host_answering() {
        let view = Arc::new(HostView::default());
        view.until_answering().await;
        view.found(true);
        assert!(view.is_down());
        let waiting = {
            let view = view.clone();
            tokio::spawn(async move { view.until_answering().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        view.found(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        // A 401 is an answer from a host that is up.
        view.found(false);
        waiting.await.unwrap();
        assert!(!view.is_down());
    }
}
