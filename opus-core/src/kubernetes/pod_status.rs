//! What a pod's status says about why it cannot go on, or what it waits for: read by `opus
//! install` while it waits for opusd's pod, and by opusd's kubernetes executor for build pods.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Waiting reasons after which a container will not start without a change: the build fails.
const FATAL_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let main = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    init.iter().chain(main)
}

/// `reason: message`, or the reason alone when the message is empty.
pub fn with_message(reason: &str, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_owned(),
    }
}

/// Why a build pod cannot go on, when it cannot: an image that cannot be pulled, a container that
/// cannot be created, the runner binary that could not be copied, or a pod the node gave up on.
/// `None` while the pod is pending normally, running, or succeeded. A failing build step is not
/// reported here: the runner reports that itself through `FinishBuild`.
pub fn pod_failure_reason(pod: &Pod) -> Option<String> {
    for status in statuses(pod) {
        let state = status.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if FATAL_WAITING.contains(&reason) {
                let what = if reason.contains("Image") {
                    format!(
                        "cannot pull image {:?} for container {}",
                        status.image, status.name
                    )
                } else {
                    format!("cannot start container {}", status.name)
                };
                return Some(format!(
                    "{what} ({})",
                    with_message(reason, waiting.message.as_deref())
                ));
            }
        }
        if status.name == "opus-runner"
            && let Some(t) = state
                .and_then(|s| s.terminated.as_ref())
                .filter(|t| t.exit_code != 0)
        {
            return Some(format!(
                "cannot copy opusd into the build pod: the opus-runner init container exited with {} ({})",
                t.exit_code,
                with_message(t.reason.as_deref().unwrap_or("Error"), t.message.as_deref())
            ));
        }
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!(
            "the build pod failed ({})",
            with_message(
                status.reason.as_deref().unwrap_or("Failed"),
                status.message.as_deref()
            )
        ));
    }
    None
}

/// What a pod is waiting for, for progress lines: a container's waiting reason
/// (`ContainerCreating`, `ImagePullBackOff: ...`) or why it is not scheduled yet.
pub fn pod_waiting_reason(pod: &Pod) -> Option<String> {
    for status in statuses(pod) {
        if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = waiting.reason.as_deref()
        {
            return Some(with_message(reason, waiting.message.as_deref()));
        }
    }
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return Some(with_message(
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref(),
        ));
    }
    status.phase.clone()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodCondition, PodStatus,
    };

    use super::*;

    fn pod(statuses: Vec<ContainerStatus>, phase: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(statuses),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn waiting(name: &str, image: &str, reason: &str, message: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: image.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_the_build_with_the_reason() {
        let p = pod(
            vec![waiting(
                "build",
                "node:99",
                "ImagePullBackOff",
                "Back-off pulling image \"node:99\"",
            )],
            "Pending",
        );
        let reason = pod_failure_reason(&p).expect("fatal");
        assert_eq!(
            reason,
            "cannot pull image \"node:99\" for container build (ImagePullBackOff: Back-off pulling image \"node:99\")"
        );
        assert_eq!(
            pod_waiting_reason(&p).as_deref(),
            Some("ImagePullBackOff: Back-off pulling image \"node:99\"")
        );
    }

    #[test]
    fn normal_waiting_is_not_a_failure() {
        let p = pod(
            vec![waiting("build", "node:20", "ContainerCreating", "")],
            "Pending",
        );
        assert_eq!(pod_failure_reason(&p), None);
        assert_eq!(pod_waiting_reason(&p).as_deref(), Some("ContainerCreating"));
        assert_eq!(pod_failure_reason(&pod(vec![], "Running")), None);
        assert_eq!(pod_failure_reason(&pod(vec![], "Succeeded")), None);
    }

    #[test]
    fn a_failed_copy_of_opusd_and_an_evicted_pod_are_failures() {
        let mut p = pod(vec![], "Pending");
        if let Some(s) = p.status.as_mut() {
            s.init_container_statuses = Some(vec![ContainerStatus {
                name: "opus-runner".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        message: Some("cp: not found".into()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]);
        }
        let reason = pod_failure_reason(&p).expect("fatal");
        assert!(
            reason.contains("opus-runner init container exited with 1 (Error: cp: not found)"),
            "{reason}"
        );

        let mut evicted = pod(vec![], "Failed");
        if let Some(s) = evicted.status.as_mut() {
            s.reason = Some("Evicted".into());
            s.message = Some("The node was low on resource: memory.".into());
        }
        assert_eq!(
            pod_failure_reason(&evicted).as_deref(),
            Some("the build pod failed (Evicted: The node was low on resource: memory.)")
        );
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let mut p = pod(vec![], "Pending");
        if let Some(s) = p.status.as_mut() {
            s.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                ..PodCondition::default()
            }]);
        }
        assert_eq!(pod_failure_reason(&p), None, "a node may still come");
        assert_eq!(
            pod_waiting_reason(&p).as_deref(),
            Some("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
        );
    }
}
