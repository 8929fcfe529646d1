//! The async shell around [`GroupCoordinator`]: parks JoinGroup and SyncGroup callers
//! until their rebalance step completes, and runs the coordinator's timers.
//!
//! The coordinator never blocks and never reads a clock; this shell owns the clock (a
//! tokio task that sleeps until [`GroupCoordinator::next_deadline`]) and the reply
//! channels (`Ticket → oneshot`). Both the gRPC and the Kafka listeners call it, so a
//! group behaves the same whichever protocol its members speak.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use crate::error::{BrokerError, Result};
use crate::group::{
    CompletionResponse, GroupConfig, GroupCoordinator, GroupDescription, GroupListing, GroupState,
    JoinOutcome, JoinRequest, JoinResponse, LeaveMember, MemberLeave, SyncOutcome, SyncResponse,
    Ticket,
};

/// The coordinator of the groups this broker is responsible for, shared by every
/// connection; cheap to call from any task.
pub struct GroupShell {
    state: Mutex<ShellState>,
    /// Woken after every call, because a call may move the next deadline earlier.
    timer_wake: Notify,
}

struct ShellState {
    coordinator: GroupCoordinator,
    parked: HashMap<Ticket, oneshot::Sender<CompletionResponse>>,
}

impl std::fmt::Debug for GroupShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupShell").finish_non_exhaustive()
    }
}

impl GroupShell {
    /// A shell with no groups, and its timer task (which ends when the shell is dropped).
    /// Must be called inside a tokio runtime.
    pub fn start(config: GroupConfig) -> Arc<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let shell = Arc::new(GroupShell {
            state: Mutex::new(ShellState {
                coordinator: GroupCoordinator::new(config, seed),
                parked: HashMap::new(),
            }),
            timer_wake: Notify::new(),
        });
        tokio::spawn(run_timers(Arc::downgrade(&shell)));
        shell
    }

    /// Runs one call against the coordinator, then delivers the completions it produced
    /// and re-arms the timer.
    fn with<T>(&self, call: impl FnOnce(&mut ShellState, Instant) -> T) -> T {
        let out = {
            let mut state = self.state.lock().expect("group shell lock poisoned");
            let out = call(&mut state, Instant::now());
            state.deliver();
            out
        };
        self.timer_wake.notify_one();
        out
    }

    /// JoinGroup: waits until the rebalance this join takes part in has all its members
    /// (or their rebalance timeout passed), as Kafka's JoinGroup does.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinResponse> {
        let group = request.group_id.clone();
        let parked = self.with(|state, now| {
            Ok(match state.coordinator.join(request, now)? {
                JoinOutcome::Ready(response) => Ok(response),
                JoinOutcome::Pending(ticket) => Err(state.park(ticket)),
            })
        })?;
        let receiver = match parked {
            Ok(ready) => return Ok(ready),
            Err(receiver) => receiver,
        };
        match receiver.await {
            Ok(CompletionResponse::Join(result)) => result,
            Ok(CompletionResponse::Sync(_)) | Err(_) => {
                Err(BrokerError::CoordinatorNotAvailable { group })
            }
        }
    }

    /// SyncGroup: the leader brings the assignment; every member waits for its share.
    pub async fn sync(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncResponse> {
        let parked = self.with(|state, now| {
            let outcome = state.coordinator.sync(
                group,
                member_id,
                group_instance_id,
                generation,
                assignments,
                now,
            )?;
            Ok(match outcome {
                SyncOutcome::Ready(response) => Ok(response),
                SyncOutcome::Pending(ticket) => Err(state.park(ticket)),
            })
        })?;
        let receiver = match parked {
            Ok(ready) => return Ok(ready),
            Err(receiver) => receiver,
        };
        match receiver.await {
            Ok(CompletionResponse::Sync(result)) => result,
            Ok(CompletionResponse::Join(_)) | Err(_) => Err(BrokerError::CoordinatorNotAvailable {
                group: group.to_string(),
            }),
        }
    }

    /// Heartbeat: keeps the member's session and tells it when to rejoin.
    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()> {
        self.with(|s, now| {
            s.coordinator
                .heartbeat(group, member_id, group_instance_id, generation, now)
        })
    }

    /// LeaveGroup: the members go at once and the group rebalances without waiting for
    /// their sessions to expire.
    pub fn leave(&self, group: &str, members: &[LeaveMember]) -> Result<Vec<MemberLeave>> {
        self.with(|s, now| s.coordinator.leave(group, members, now))
    }

    /// Whether a member (or, with generation -1 and no member id, a simple consumer) may
    /// commit offsets for the group now.
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()> {
        self.with(|s, now| {
            s.coordinator
                .validate_commit(group, member_id, group_instance_id, generation, now)
        })
    }

    /// DescribeGroups for one group (`Dead` when this broker has no such group).
    pub fn describe(&self, group: &str) -> GroupDescription {
        self.with(|s, _| s.coordinator.describe_group(group))
    }

    /// The groups with members or state here, optionally filtered by state.
    pub fn list(&self, states: &[GroupState]) -> Vec<GroupListing> {
        self.with(|s, _| s.coordinator.list_groups(states))
    }

    /// Drops the groups whose coordinator moved to another broker: their parked callers
    /// are answered NOT_COORDINATOR and find the new coordinator.
    pub fn unload_where(&self, moved: impl FnMut(&str) -> bool) {
        self.with(|s, _| s.coordinator.unload_where(moved));
    }
}

impl ShellState {
    /// Registers the reply channel of a call the coordinator parked. Called in the same
    /// critical section as the call, so its completion cannot be delivered before.
    fn park(&mut self, ticket: Ticket) -> oneshot::Receiver<CompletionResponse> {
        let (sender, receiver) = oneshot::channel();
        self.parked.insert(ticket, sender);
        receiver
    }

    /// Answers every parked caller whose completion is ready; a caller that went away
    /// (its connection closed) is skipped.
    fn deliver(&mut self) {
        for completion in self.coordinator.take_completions() {
            if let Some(sender) = self.parked.remove(&completion.ticket) {
                let _ = sender.send(completion.response);
            }
        }
    }
}

/// Ticks the coordinator at its next deadline, and re-arms whenever a call may have
/// changed that deadline.
async fn run_timers(shell: Weak<GroupShell>) {
    loop {
        let (deadline, wake) = {
            let Some(shell) = shell.upgrade() else { return };
            let deadline = shell
                .state
                .lock()
                .expect("group shell lock poisoned")
                .coordinator
                .next_deadline();
            (deadline, shell)
        };
        // Wake at least every second, so that a dropped shell ends this task.
        let at_latest = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        let sleep_until = deadline
            .map(tokio::time::Instant::from_std)
            .map_or(at_latest, |d| d.min(at_latest));
        tokio::select! {
            () = tokio::time::sleep_until(sleep_until) => {
                wake.with(|s, now| s.coordinator.tick(now));
            }
            () = wake.timer_wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::group::assignor::Subscription;

    fn config() -> GroupConfig {
        GroupConfig {
            min_session_timeout: Duration::from_millis(10),
            initial_rebalance_delay: Duration::ZERO,
            ..GroupConfig::default()
        }
    }

    fn join_request(member_id: &str, session: Duration) -> JoinRequest {
        let mut join = JoinRequest::new("billing", "c");
        join.member_id = member_id.to_string();
        join.session_timeout = session;
        join.rebalance_timeout = Duration::from_secs(5);
        join.protocols = vec![crate::group::Protocol::new(
            "range",
            Subscription::new(["orders"]).encode(1).unwrap(),
        )];
        join
    }

    #[tokio::test]
    async fn a_parked_join_is_answered_when_the_rebalance_completes() {
        let shell = GroupShell::start(config());
        let first = shell
            .join(join_request("", Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(first.is_leader());
        shell
            .sync(
                "billing",
                &first.member_id,
                None,
                first.generation_id,
                vec![],
            )
            .await
            .unwrap();
        // A second member's join parks until the first rejoins (told by its heartbeat).
        let second = {
            let shell = shell.clone();
            tokio::spawn(async move { shell.join(join_request("", Duration::from_secs(5))).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "the join waits for the rebalance");
        let rebalancing = shell.heartbeat("billing", &first.member_id, None, first.generation_id);
        assert_eq!(
            rebalancing.unwrap_err().code(),
            crate::ErrorCode::RebalanceInProgress
        );
        let rejoined = shell
            .join(join_request(&first.member_id, Duration::from_secs(5)))
            .await
            .unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(rejoined.generation_id, second.generation_id);
        assert_eq!(rejoined.members.len(), 2, "the leader sees both members");
    }

    #[tokio::test]
    async fn the_timer_expires_a_silent_member() {
        let shell = GroupShell::start(config());
        let joined = shell
            .join(join_request("", Duration::from_millis(100)))
            .await
            .unwrap();
        shell
            .sync(
                "billing",
                &joined.member_id,
                None,
                joined.generation_id,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(shell.describe("billing").members.len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let described = shell.describe("billing");
        assert!(described.members.is_empty(), "{described:?}");
        assert_eq!(described.state, GroupState::Empty);
    }
}
