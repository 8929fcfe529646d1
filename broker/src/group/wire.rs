//! Group membership over gRPC: protobuf requests into coordinator calls and results back.
//! Errors travel in the responses' `error_code` fields (as Kafka's do), because a client
//! acts on them: MEMBER_ID_REQUIRED carries the id to join with, REBALANCE_IN_PROGRESS
//! means rejoin, NOT_COORDINATOR means find the coordinator again.

use std::time::Duration;

use crate::error::BrokerError;
use crate::group::assignor::Assignment;
use crate::group::shell::GroupShell;
use crate::group::{GroupDescription, JoinRequest, LeaveMember, Protocol};
use crate::proto;

fn error_fields(err: &BrokerError) -> (i32, String) {
    (err.code() as i32, err.to_string())
}

/// Runs a JoinGroup for `client_host` (the caller's address, shown by describe).
pub async fn join(
    shell: &GroupShell,
    request: proto::JoinGroupRequest,
    client_host: String,
) -> proto::JoinGroupResponse {
    let join = JoinRequest {
        group_id: request.group,
        member_id: request.member_id,
        group_instance_id: request.group_instance_id,
        client_id: request.client_id,
        client_host,
        protocol_type: request.protocol_type,
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol::new(p.name, p.metadata))
            .collect(),
        session_timeout: Duration::from_millis(u64::from(request.session_timeout_ms)),
        rebalance_timeout: Duration::from_millis(u64::from(request.rebalance_timeout_ms)),
        require_known_member_id: request.require_known_member_id,
    };
    match shell.join(join).await {
        Ok(joined) => proto::JoinGroupResponse {
            error_code: 0,
            error_message: String::new(),
            generation_id: joined.generation_id,
            protocol_name: joined.protocol_name,
            leader: joined.leader,
            member_id: joined.member_id,
            members: joined
                .members
                .into_iter()
                .map(|m| proto::JoinGroupMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    metadata: m.metadata,
                })
                .collect(),
        },
        Err(err) => {
            let (error_code, error_message) = error_fields(&err);
            let member_id = match err {
                BrokerError::MemberIdRequired { member_id, .. } => member_id,
                _ => String::new(),
            };
            proto::JoinGroupResponse {
                error_code,
                error_message,
                member_id,
                ..Default::default()
            }
        }
    }
}

/// Runs a SyncGroup.
pub async fn sync(
    shell: &GroupShell,
    request: proto::SyncGroupRequest,
) -> proto::SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id, a.assignment))
        .collect();
    match shell
        .sync(
            &request.group,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            assignments,
        )
        .await
    {
        Ok(synced) => proto::SyncGroupResponse {
            assignment: synced.assignment,
            ..Default::default()
        },
        Err(err) => {
            let (error_code, error_message) = error_fields(&err);
            proto::SyncGroupResponse {
                error_code,
                error_message,
                ..Default::default()
            }
        }
    }
}

/// Runs a Heartbeat.
pub fn heartbeat(
    shell: &GroupShell,
    request: &proto::GroupHeartbeatRequest,
) -> proto::GroupHeartbeatResponse {
    match shell.heartbeat(
        &request.group,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    ) {
        Ok(()) => proto::GroupHeartbeatResponse::default(),
        Err(err) => {
            let (error_code, error_message) = error_fields(&err);
            proto::GroupHeartbeatResponse {
                error_code,
                error_message,
            }
        }
    }
}

/// Runs a LeaveGroup for one member.
pub fn leave(shell: &GroupShell, request: &proto::LeaveGroupRequest) -> proto::LeaveGroupResponse {
    let member = LeaveMember {
        member_id: request.member_id.clone(),
        group_instance_id: request.group_instance_id.clone(),
    };
    let result = shell
        .leave(&request.group, std::slice::from_ref(&member))
        .and_then(|mut left| match left.pop().and_then(|l| l.error) {
            Some(err) => Err(err),
            None => Ok(()),
        });
    match result {
        Ok(()) => proto::LeaveGroupResponse::default(),
        Err(err) => {
            let (error_code, error_message) = error_fields(&err);
            proto::LeaveGroupResponse {
                error_code,
                error_message,
            }
        }
    }
}

/// A group's state and members, assignments decoded (an undecodable one, from a
/// non-consumer protocol, shows as no partitions).
pub fn describe(
    description: GroupDescription,
    coordinator_id: u64,
) -> proto::DescribeGroupResponse {
    proto::DescribeGroupResponse {
        error_code: 0,
        error_message: String::new(),
        state: description.state.as_str().to_string(),
        protocol_type: description.protocol_type,
        protocol_name: description.protocol_name,
        generation_id: description.generation_id,
        leader: description.leader.unwrap_or_default(),
        members: description
            .members
            .into_iter()
            .map(|m| proto::GroupMemberDescription {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assigned: assigned_partitions(&m.assignment),
            })
            .collect(),
        coordinator_id,
    }
}

fn assigned_partitions(assignment: &[u8]) -> Vec<proto::TopicPartitions> {
    let Ok(decoded) = Assignment::decode(assignment) else {
        return Vec::new();
    };
    let mut out: Vec<proto::TopicPartitions> = Vec::new();
    for tp in decoded.partitions {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
            _ => out.push(proto::TopicPartitions {
                topic: tp.topic,
                partitions: vec![tp.partition],
            }),
        }
    }
    out
}
