//! The plan: what to do to one stack's containers, decided from what is wanted and what runs.
//!
//! Pure: no IO, no clock. The caller observes the engine and hands in plain values; `plan` returns
//! a complete, typed `Plan` whose every step carries exactly what carrying it out needs, so that
//! `apply` only executes it (issue 9, "Shape of the code").

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::{Container, ContainerSpec, ImageId, State};
use crate::stack::ConfigHash;
use crate::stack::compose::Project;

use super::labels;

/// One stack's steps: removals of what is gone first, then services in dependency order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// One service's step, with the reason shown to users in `--dry-run` and in reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub service: String,
    pub action: Action,
    /// Why, for anything but `Keep`.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        spec: ContainerSpec,
    },
    /// Replaces `old`, which may already be renamed aside by a pass that was interrupted.
    Recreate {
        old: Container,
        spec: ContainerSpec,
        order: Order,
    },
    /// Starts `old` (stopped, or left renamed aside by an interrupted pass: it gets `name` back).
    Start {
        old: Container,
        name: String,
    },
    Remove {
        old: Container,
    },
    Keep {
        current: Container,
    },
}

/// How a recreate hands over from the old container to the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Stop the old container, then start the new one (Compose's way; the new one may need the
    /// old one's host ports or name).
    StopFirst,
    /// Start the new container while the old one still runs, and stop the old one only once the
    /// new one is healthy (`deploy.update_config.order: start-first`).
    StartFirst,
}

/// What a report shows of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub service: String,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Create,
    Recreate,
    Start,
    Remove,
    #[serde(rename = "unchanged")]
    Keep,
}

/// What one service should be: the container to create, and what it is compared by.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub config_hash: ConfigHash,
    /// `None` only in a dry run, for an image that is not present yet.
    pub image: Option<ImageId>,
    pub spec: ContainerSpec,
    pub order: Order,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("services {0} depend on each other in a cycle")]
pub struct CycleError(String);

impl Plan {
    /// Whether carrying the plan out would touch anything.
    pub fn changes_anything(&self) -> bool {
        self.steps
            .iter()
            .any(|step| !matches!(step.action, Action::Keep { .. }))
    }

    pub fn summaries(&self) -> Vec<Summary> {
        self.steps.iter().map(Step::summary).collect()
    }
}

impl Step {
    pub fn kind(&self) -> Kind {
        match self.action {
            Action::Create { .. } => Kind::Create,
            Action::Recreate { .. } => Kind::Recreate,
            Action::Start { .. } => Kind::Start,
            Action::Remove { .. } => Kind::Remove,
            Action::Keep { .. } => Kind::Keep,
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            service: self.service.clone(),
            kind: self.kind(),
            reason: self.reason.clone(),
        }
    }

    /// The container the service has now, if any.
    pub fn current(&self) -> Option<&Container> {
        match &self.action {
            Action::Create { .. } => None,
            Action::Recreate { old, .. }
            | Action::Start { old, .. }
            | Action::Remove { old }
            | Action::Keep { current: old } => Some(old),
        }
    }
}

/// Decides one stack's steps from the wanted services and the containers the engine reports.
///
/// A container renamed aside by a recreate that never finished (stackhook died in between) is
/// recognised by its name, `<id prefix>_<name>`: it is started again under its name if it is
/// what is wanted, or replaced, and a half-made replacement beside it is removed (issue 9,
/// "Crash safety").
pub fn plan(
    project: &Project,
    wanted: &BTreeMap<String, Wanted>,
    observed: &[Container],
) -> Result<Plan, CycleError> {
    let mut by_service: BTreeMap<&str, Vec<&Container>> = BTreeMap::new();
    for container in observed {
        if container.label(labels::ONEOFF) == Some("True") {
            continue;
        }
        if let Some(service) = container.label(labels::SERVICE) {
            by_service.entry(service).or_default().push(container);
        }
    }

    let mut removals = Vec::new();
    let mut steps = Vec::new();
    for service in start_order(project)? {
        let want = &wanted[&service];
        let mut containers = by_service.remove(service.as_str()).unwrap_or_default();
        containers.sort_by_key(|c| (container_number(c), c.name != want.spec.name));
        let current = containers
            .iter()
            .position(|c| c.name == want.spec.name)
            .map(|i| containers.remove(i));
        let aside = containers
            .iter()
            .position(|c| is_aside(c, &want.spec.name))
            .map(|i| containers.remove(i));
        for surplus in containers {
            removals.push(step(
                &service,
                Action::Remove {
                    old: surplus.clone(),
                },
                format!("container {} is a surplus replica", surplus.name),
            ));
        }
        let action = match (current, aside) {
            (None, None) => step(
                &service,
                Action::Create {
                    spec: want.spec.clone(),
                },
                "no container yet",
            ),
            (Some(current), None) => decide(&service, want, current, false),
            (None, Some(aside)) => decide(&service, want, aside, true),
            // The replacement got as far as running: the old container is what is left over.
            (Some(current), Some(aside)) if current.state == State::Running => {
                removals.push(step(
                    &service,
                    Action::Remove { old: aside.clone() },
                    "left over from an interrupted recreate",
                ));
                decide(&service, want, current, false)
            }
            // The replacement never got running: remove it and start over from the old one.
            (Some(current), Some(aside)) => {
                removals.push(step(
                    &service,
                    Action::Remove {
                        old: current.clone(),
                    },
                    "unfinished replacement from an interrupted recreate",
                ));
                decide(&service, want, aside, true)
            }
        };
        steps.push(action);
    }
    for (service, containers) in by_service {
        for container in containers {
            removals.push(step(
                service,
                Action::Remove {
                    old: container.clone(),
                },
                "service is no longer in the compose file",
            ));
        }
    }
    removals.extend(steps);
    Ok(Plan { steps: removals })
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

/// The name a recreate gives the old container while its replacement takes over its name, as
/// Docker Compose does: the container id's first 12 characters, `_`, the name.
pub fn aside_name(container: &Container, name: &str) -> String {
    format!("{}_{name}", &container.id[..container.id.len().min(12)])
}

fn is_aside(container: &Container, name: &str) -> bool {
    container.name == aside_name(container, name)
}

/// Why `container` is not what is wanted, if it is not.
fn differs(want: &Wanted, container: &Container) -> Option<&'static str> {
    if container.label(labels::STACKHOOK_COMMIT).is_none() {
        return Some("adopting a container stackhook did not create");
    }
    if container.label(labels::CONFIG_HASH) != Some(want.config_hash.as_str()) {
        return Some("configuration changed");
    }
    if let Some(image) = &want.image
        && *image != container.image_id
    {
        return Some("image updated");
    }
    None
}

fn decide(service: &str, want: &Wanted, container: &Container, aside: bool) -> Step {
    if let Some(reason) = differs(want, container) {
        let action = Action::Recreate {
            old: container.clone(),
            spec: want.spec.clone(),
            order: want.order,
        };
        return step(service, action, reason);
    }
    let start = |reason: String| {
        let action = Action::Start {
            old: container.clone(),
            name: want.spec.name.clone(),
        };
        step(service, action, reason)
    };
    match &container.state {
        _ if aside => start(format!(
            "restoring {} from an interrupted recreate",
            want.spec.name
        )),
        State::Running | State::Restarting => Step {
            service: service.to_owned(),
            action: Action::Keep {
                current: container.clone(),
            },
            reason: None,
        },
        state => start(format!("container is {}", state_name(state))),
    }
}

fn step(service: &str, action: Action, reason: impl Into<String>) -> Step {
    Step {
        service: service.to_owned(),
        action,
        reason: Some(reason.into()),
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

    /// An observed container: (service, config hash, image id, state, made by stackhook, name)
    /// where a name of `None` is the service's own.
    type Observed<'a> = (&'a str, &'a str, &'a str, State, bool, Option<&'a str>);

    fn check(
        project: &Project,
        wanted: &[(&str, &str, Option<&str>)],
        observed: &[Observed<'_>],
        expected: Expect,
    ) {
        let origin = labels::Origin {
            stack: "demo",
            commit: "c1",
        };
        let wanted = wanted
            .iter()
            .map(|(service, hash, image)| {
                let config_hash = ConfigHash::new(*hash);
                let image = image.map(ImageId::new);
                let spec = labels::container_spec(
                    project,
                    service,
                    "busybox",
                    image.as_ref(),
                    &config_hash,
                    &origin,
                );
                let want = Wanted {
                    config_hash,
                    image,
                    spec,
                    order: Order::StopFirst,
                };
                (service.to_string(), want)
            })
            .collect();
        let observed: Vec<Container> = observed
            .iter()
            .enumerate()
            .map(|(i, (service, hash, image, state, ours, name))| {
                let mut labels = BTreeMap::from([
                    (labels::SERVICE.to_string(), service.to_string()),
                    (labels::CONFIG_HASH.to_string(), hash.to_string()),
                    (labels::CONTAINER_NUMBER.to_string(), "1".to_string()),
                ]);
                if *ours {
                    labels.insert(labels::STACKHOOK_COMMIT.into(), "c0ffee".into());
                }
                let id = format!("{i:012}{service}");
                Container {
                    name: name.map_or_else(
                        || format!("demo-{service}-1"),
                        |n| n.replace("<id>", &id[..12]),
                    ),
                    id,
                    image: "busybox".into(),
                    image_id: ImageId::new(*image),
                    labels,
                    state: state.clone(),
                }
            })
            .collect();
        let actual = match plan(project, &wanted, &observed) {
            Ok(plan) => plan.steps.iter().fold(String::new(), |mut out, step| {
                let reason = step.reason.as_deref().unwrap_or("-");
                let container = step.current().map_or("-", |c| c.name.as_str());
                writeln!(
                    out,
                    "{:<8} {:?} {container}: {reason}",
                    step.service,
                    step.kind()
                )
                .unwrap();
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
                cache    Create -: no container yet
                db       Create -: no container yet
                web      Create -: no container yet
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
                ("web", "old", "img", State::Running, true, None),
                ("db", "same", "img", State::Running, true, None),
            ],
            expect![[r#"
                db       Keep demo-db-1: -
                web      Recreate demo-web-1: configuration changed
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
                ("web", "h", "img1", State::Running, true, None),
                ("worker", "h", "img", State::Exited, true, None),
                ("old", "h", "img", State::Running, true, None),
            ],
            expect![[r#"
                old      Remove demo-old-1: service is no longer in the compose file
                web      Recreate demo-web-1: image updated
                worker   Start demo-worker-1: container is exited
            "#]],
        );
    }

    #[test]
    fn containers_made_by_docker_compose_are_adopted() {
        let project = project(&[("web", &[])]);
        check(
            &project,
            &[("web", "h", None)],
            &[("web", "h", "img", State::Running, false, None)],
            expect![[r#"
                web      Recreate demo-web-1: adopting a container stackhook did not create
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

    #[test]
    fn a_container_left_aside_by_an_interrupted_recreate_is_restored_or_replaced() {
        let project = project(&[("web", &[]), ("api", &[])]);
        check(
            &project,
            &[("web", "h", None), ("api", "new", None)],
            &[
                // Died right after the rename: web is what is wanted, api is not.
                (
                    "web",
                    "h",
                    "img",
                    State::Exited,
                    true,
                    Some("<id>_demo-web-1"),
                ),
                (
                    "api",
                    "old",
                    "img",
                    State::Running,
                    true,
                    Some("<id>_demo-api-1"),
                ),
            ],
            expect![[r#"
                api      Recreate 000000000001_demo-api-1: configuration changed
                web      Start 000000000000_demo-web-1: restoring demo-web-1 from an interrupted recreate
            "#]],
        );
    }

    #[test]
    fn an_interrupted_recreate_finishes_or_starts_over() {
        let project = project(&[("web", &[]), ("api", &[])]);
        check(
            &project,
            &[("web", "new", None), ("api", "new", None)],
            &[
                // web's replacement runs: only the old container is left to remove.
                (
                    "web",
                    "old",
                    "img",
                    State::Exited,
                    true,
                    Some("<id>_demo-web-1"),
                ),
                ("web", "new", "img", State::Running, true, None),
                // api's replacement was created but never started: start over from the old one.
                (
                    "api",
                    "old",
                    "img",
                    State::Exited,
                    true,
                    Some("<id>_demo-api-1"),
                ),
                ("api", "new", "img", State::Created, true, None),
            ],
            expect![[r#"
                api      Remove demo-api-1: unfinished replacement from an interrupted recreate
                web      Remove 000000000000_demo-web-1: left over from an interrupted recreate
                api      Recreate 000000000002_demo-api-1: configuration changed
                web      Keep demo-web-1: -
            "#]],
        );
    }
}
