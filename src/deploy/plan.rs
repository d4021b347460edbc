//! The plan: what to do to one stack's containers, decided from what is wanted and what runs.
//!
//! Pure: no IO, no clock. The caller observes the engine and hands in plain values; the plan
//! says, per service, whether to create, recreate (and why), start, remove or leave it alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::{Container, State};
use crate::stack::compose::Project;

use super::labels;

/// One service's step, with the reason shown to users in `--dry-run` and in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub service: String,
    pub kind: ActionKind,
    /// Why, for anything but `Unchanged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The container the action replaces or removes.
    #[serde(skip)]
    pub container: Option<Container>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Create,
    Recreate,
    Start,
    Remove,
    Unchanged,
}

/// What one service should be: its config hash and, where known, the id of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub config_hash: String,
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("services {0} depend on each other in a cycle")]
pub struct CycleError(String);

/// Decides one stack's actions: services in dependency order, then removals of containers whose
/// service is gone from the compose file.
pub fn plan(
    project: &Project,
    wanted: &BTreeMap<String, Wanted>,
    observed: &[Container],
) -> Result<Vec<Action>, CycleError> {
    let mut by_service: BTreeMap<&str, Vec<&Container>> = BTreeMap::new();
    for container in observed {
        if container.label(labels::ONEOFF) == Some("True") {
            continue;
        }
        if let Some(service) = container.label(labels::SERVICE) {
            by_service.entry(service).or_default().push(container);
        }
    }
    for containers in by_service.values_mut() {
        containers.sort_by_key(|c| container_number(c));
    }

    let mut actions = Vec::new();
    for service in start_order(project)? {
        let want = &wanted[&service];
        let existing = by_service.remove(service.as_str()).unwrap_or_default();
        let mut existing = existing.into_iter();
        actions.push(match existing.next() {
            None => action(
                &service,
                ActionKind::Create,
                Some("no container yet".into()),
                None,
            ),
            Some(container) => decide(&service, want, container),
        });
        for extra in existing {
            actions.push(action(
                &service,
                ActionKind::Remove,
                Some(format!("container {} is a surplus replica", extra.name)),
                Some(extra),
            ));
        }
    }
    for (service, containers) in by_service {
        for container in containers {
            actions.push(action(
                service,
                ActionKind::Remove,
                Some("service is no longer in the compose file".into()),
                Some(container),
            ));
        }
    }
    Ok(actions)
}

/// Services in an order where each comes after everything it depends on; ties by name, so the
/// order is stable. Dependencies on services that are not in the project (left out by a profile)
/// are ignored here; compose parsing already refused unknown names.
pub fn start_order(project: &Project) -> Result<Vec<String>, CycleError> {
    let mut order = Vec::with_capacity(project.services.len());
    let mut done = BTreeSet::new();
    while order.len() < project.services.len() {
        let ready: Vec<&String> = project
            .services
            .iter()
            .filter(|(name, _)| !done.contains(name.as_str()))
            .filter(|(_, service)| {
                service.depends_on.keys().all(|dependency| {
                    done.contains(dependency.as_str()) || !project.services.contains_key(dependency)
                })
            })
            .map(|(name, _)| name)
            .collect();
        if ready.is_empty() {
            let rest: Vec<&str> = project
                .services
                .keys()
                .filter(|name| !done.contains(name.as_str()))
                .map(String::as_str)
                .collect();
            return Err(CycleError(rest.join(", ")));
        }
        for name in ready {
            done.insert(name.as_str());
            order.push(name.clone());
        }
    }
    Ok(order)
}

fn decide(service: &str, want: &Wanted, container: &Container) -> Action {
    let recreate = |reason: &str| {
        action(
            service,
            ActionKind::Recreate,
            Some(reason.into()),
            Some(container),
        )
    };
    if container.label(labels::STACKHOOK_COMMIT).is_none() {
        return recreate("adopting a container stackhook did not create");
    }
    if container.label(labels::CONFIG_HASH) != Some(want.config_hash.as_str()) {
        return recreate("configuration changed");
    }
    if let Some(image_id) = &want.image_id
        && *image_id != container.image_id
    {
        return recreate("image updated");
    }
    match &container.state {
        State::Running | State::Restarting => {
            action(service, ActionKind::Unchanged, None, Some(container))
        }
        state => action(
            service,
            ActionKind::Start,
            Some(format!("container is {}", state_name(state))),
            Some(container),
        ),
    }
}

fn action(
    service: &str,
    kind: ActionKind,
    reason: Option<String>,
    container: Option<&Container>,
) -> Action {
    Action {
        service: service.to_owned(),
        kind,
        reason,
        container: container.cloned(),
    }
}

fn container_number(container: &Container) -> u32 {
    container
        .label(labels::CONTAINER_NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

fn state_name(state: &State) -> &str {
    match state {
        State::Created => "created",
        State::Running => "running",
        State::Paused => "paused",
        State::Restarting => "restarting",
        State::Removing => "removing",
        State::Exited => "exited",
        State::Dead => "dead",
        State::Unknown(name) => name,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use expect_test::{Expect, expect};

    use super::*;
    use crate::stack::compose::{Condition, Dependency, Service};

    fn project(services: &[(&str, &[&str])]) -> Project {
        Project {
            name: "demo".into(),
            working_dir: "/repo/services/demo".into(),
            config_files: vec![],
            services: services
                .iter()
                .map(|(name, depends_on)| {
                    let service = Service {
                        image: Some("busybox".into()),
                        depends_on: depends_on
                            .iter()
                            .map(|d| {
                                let dependency = Dependency {
                                    condition: Condition::ServiceStarted,
                                    required: true,
                                    restart: false,
                                };
                                (d.to_string(), dependency)
                            })
                            .collect(),
                        ..Service::default()
                    };
                    (name.to_string(), service)
                })
                .collect(),
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            files_read: vec![],
            variables: BTreeMap::new(),
        }
    }

    /// `observed`: (service, config hash, image id, state, ours)
    fn check(
        project: &Project,
        wanted: &[(&str, &str, Option<&str>)],
        observed: &[(&str, &str, &str, State, bool)],
        expected: Expect,
    ) {
        let wanted = wanted
            .iter()
            .map(|(service, hash, image)| {
                let want = Wanted {
                    config_hash: hash.to_string(),
                    image_id: image.map(String::from),
                };
                (service.to_string(), want)
            })
            .collect();
        let observed: Vec<Container> = observed
            .iter()
            .map(|(service, hash, image, state, ours)| {
                let mut labels = BTreeMap::from([
                    (labels::SERVICE.to_string(), service.to_string()),
                    (labels::CONFIG_HASH.to_string(), hash.to_string()),
                    (labels::CONTAINER_NUMBER.to_string(), "1".to_string()),
                ]);
                if *ours {
                    labels.insert(labels::STACKHOOK_COMMIT.into(), "c0ffee".into());
                }
                Container {
                    id: format!("id-{service}"),
                    name: format!("demo-{service}-1"),
                    image: "busybox".into(),
                    image_id: image.to_string(),
                    labels,
                    state: state.clone(),
                }
            })
            .collect();
        let actual = match plan(project, &wanted, &observed) {
            Ok(actions) => actions.iter().fold(String::new(), |mut out, a| {
                let reason = a.reason.as_deref().unwrap_or("-");
                writeln!(out, "{:<8} {:?}: {reason}", a.service, a.kind).unwrap();
                out
            }),
            Err(error) => format!("error: {error}\n"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn fresh_stack_creates_in_dependency_order() {
        let project = project(&[("web", &["db"]), ("db", &[]), ("cache", &[])]);
        check(
            &project,
            &[
                ("web", "h1", None),
                ("db", "h2", None),
                ("cache", "h3", None),
            ],
            &[],
            expect![[r#"
                cache    Create: no container yet
                db       Create: no container yet
                web      Create: no container yet
            "#]],
        );
    }

    #[test]
    fn only_changed_services_are_recreated() {
        let project = project(&[("web", &["db"]), ("db", &[])]);
        check(
            &project,
            &[("web", "new", None), ("db", "same", None)],
            &[
                ("web", "old", "img", State::Running, true),
                ("db", "same", "img", State::Running, true),
            ],
            expect![[r#"
                db       Unchanged: -
                web      Recreate: configuration changed
            "#]],
        );
    }

    #[test]
    fn newer_image_recreates_stopped_container_starts_and_removed_service_goes() {
        let project = project(&[("web", &[]), ("worker", &[])]);
        check(
            &project,
            &[("web", "h", Some("img2")), ("worker", "h", Some("img"))],
            &[
                ("web", "h", "img1", State::Running, true),
                ("worker", "h", "img", State::Exited, true),
                ("old", "h", "img", State::Running, true),
            ],
            expect![[r#"
                web      Recreate: image updated
                worker   Start: container is exited
                old      Remove: service is no longer in the compose file
            "#]],
        );
    }

    #[test]
    fn containers_made_by_docker_compose_are_adopted() {
        let project = project(&[("web", &[])]);
        check(
            &project,
            &[("web", "h", None)],
            &[("web", "h", "img", State::Running, false)],
            expect![[r#"
                web      Recreate: adopting a container stackhook did not create
            "#]],
        );
    }

    #[test]
    fn dependency_cycle_is_an_error() {
        let project = project(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]);
        check(
            &project,
            &[("a", "h", None), ("b", "h", None), ("c", "h", None)],
            &[],
            expect![[r#"
                error: services a, b depend on each other in a cycle
            "#]],
        );
    }
}
