//! The plan: what to do to one stack's containers, decided from what is wanted and what runs.
//!
//! Pure: no IO, no clock. The caller observes the engine and hands in plain values; `plan` returns
//! a complete, typed `Plan` whose every step carries exactly what carrying it out needs, so that
//! `apply` only executes it (issue 9, "Shape of the code").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::engine::{Container, ContainerSpec, ImageId, State};
use crate::stack::ConfigHash;
use crate::stack::compose::{Project, UpdateOrder};

use super::labels;

/// One stack's steps: removals of what is gone first, then services in dependency order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// One container's step, with the reason shown to users in `--dry-run` and in reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub service: String,
    /// The container's number within its service (`com.docker.compose.container-number`).
    pub number: u32,
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
    /// Stop-first (Compose's way) stops the old container before the new one starts, since the
    /// new one may need its host ports; start-first leaves it running until the new one passes
    /// its gate (`deploy.update_config.order`).
    Recreate {
        old: Container,
        spec: ContainerSpec,
        order: UpdateOrder,
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

/// What a report shows of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub service: String,
    /// The container's number, shown for any but the first.
    #[serde(skip_serializing_if = "is_first", default = "first")]
    pub number: u32,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Create,
    Recreate,
    Start,
    Remove,
    #[serde(rename = "unchanged")]
    Keep,
}

/// What one service should be: the containers to create, and what they are compared by.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub config_hash: ConfigHash,
    /// `None` only in a dry run, for an image that is not present yet.
    pub image: Option<ImageId>,
    /// One per container the service runs, numbered from 1 (`scale`, `deploy.replicas`).
    pub specs: Vec<ContainerSpec>,
    pub order: UpdateOrder,
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
            number: self.number,
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
        containers.sort_by_key(|c| (container_number(c), c.name.clone()));
        for (spec, number) in want.specs.iter().zip(1..) {
            let mut take = |matches: &dyn Fn(&Container) -> bool| {
                let found = containers.iter().position(|c| matches(c))?;
                Some(containers.remove(found))
            };
            let current = take(&|c| c.name == spec.name);
            let aside = take(&|c| is_aside(c, &spec.name));
            let step = |action: Action, reason: Option<String>| Step {
                service: service.clone(),
                number,
                action,
                reason,
            };
            steps.push(match (current, aside) {
                (None, None) => step(
                    Action::Create { spec: spec.clone() },
                    Some("no container yet".into()),
                ),
                (Some(current), None) => decide(want, spec, current, false, step),
                (None, Some(aside)) => decide(want, spec, aside, true, step),
                // The replacement got as far as running: the old container is what is left
                // over.
                (Some(current), Some(aside)) if current.state == State::Running => {
                    removals.push(step(
                        Action::Remove { old: aside.clone() },
                        Some("left over from an interrupted recreate".into()),
                    ));
                    decide(want, spec, current, false, step)
                }
                // The replacement never got running: remove it and start over from the old one.
                (Some(current), Some(aside)) => {
                    removals.push(step(
                        Action::Remove {
                            old: current.clone(),
                        },
                        Some("unfinished replacement from an interrupted recreate".into()),
                    ));
                    decide(want, spec, aside, true, step)
                }
            });
        }
        for surplus in containers {
            removals.push(Step {
                service: service.clone(),
                number: container_number(surplus),
                action: Action::Remove {
                    old: surplus.clone(),
                },
                reason: Some(format!("container {} is a surplus replica", surplus.name)),
            });
        }
    }
    for (service, containers) in by_service {
        for container in containers {
            removals.push(Step {
                service: service.to_owned(),
                number: container_number(container),
                action: Action::Remove {
                    old: container.clone(),
                },
                reason: Some("service is no longer in the compose file".into()),
            });
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
fn differs(want: &Wanted, container: &Container) -> Option<String> {
    if container.label(labels::STACKHOOK_COMMIT).is_none() {
        return Some("adopting a container stackhook did not create".into());
    }
    if container.label(labels::CONFIG_HASH) != Some(want.config_hash.as_str()) {
        return Some("configuration changed".into());
    }
    if let Some(image) = &want.image
        && *image != container.image_id
    {
        // Which digest went and which came: the history's answer to "why did it redeploy?".
        let short = |id: &ImageId| {
            let id = id.as_str();
            id[..id.len().min("sha256:".len() + 12)].to_owned()
        };
        return Some(format!(
            "image updated: {} → {}",
            short(&container.image_id),
            short(image)
        ));
    }
    None
}

fn decide(
    want: &Wanted,
    spec: &ContainerSpec,
    container: &Container,
    aside: bool,
    step: impl Fn(Action, Option<String>) -> Step,
) -> Step {
    if let Some(reason) = differs(want, container) {
        let action = Action::Recreate {
            old: container.clone(),
            spec: spec.clone(),
            order: want.order,
        };
        return step(action, Some(reason));
    }
    let start = |reason: String| {
        let action = Action::Start {
            old: container.clone(),
            name: spec.name.clone(),
        };
        step(action, Some(reason))
    };
    match &container.state {
        _ if aside => start(format!(
            "restoring {} from an interrupted recreate",
            spec.name
        )),
        State::Running | State::Restarting => step(
            Action::Keep {
                current: container.clone(),
            },
            None,
        ),
        state => start(format!("container is {}", state_name(state))),
    }
}

fn is_first(number: &u32) -> bool {
    *number == 1
}

fn first() -> u32 {
    1
}

fn container_number(container: &Container) -> u32 {
    container
        .label(labels::CONTAINER_NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

pub(crate) fn state_name(state: &State) -> &str {
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
            sealed: BTreeMap::new(),
            variables: BTreeMap::new(),
            notes: Vec::new(),
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
                    1,
                    "busybox",
                    image.as_ref(),
                    &config_hash,
                    &origin,
                );
                let want = Wanted {
                    config_hash,
                    image,
                    specs: vec![spec],
                    order: UpdateOrder::StopFirst,
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
                web      Recreate demo-web-1: image updated: img1 → img2
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

    #[test]
    fn replicas_are_created_kept_and_removed_by_number() {
        let mut project = project(&[("web", &[]), ("worker", &[])]);
        project.services.get_mut("web").unwrap().scale = Some(3);
        project.services.get_mut("worker").unwrap().scale = Some(1);
        let origin = labels::Origin {
            stack: "demo",
            commit: "c1",
        };
        let hash = ConfigHash::new("h");
        let wanted: BTreeMap<String, Wanted> = ["web", "worker"]
            .into_iter()
            .map(|service| {
                let specs = (1..=labels::replicas(&project, service))
                    .map(|n| {
                        labels::container_spec(
                            &project, service, n, "busybox", None, &hash, &origin,
                        )
                    })
                    .collect();
                let want = Wanted {
                    config_hash: hash.clone(),
                    image: None,
                    specs,
                    order: UpdateOrder::StopFirst,
                };
                (service.to_owned(), want)
            })
            .collect();
        let container = |service: &str, number: u32| {
            let spec =
                labels::container_spec(&project, service, number, "busybox", None, &hash, &origin);
            Container {
                id: format!("{service}{number:011}"),
                name: spec.name,
                image: "busybox".into(),
                image_id: ImageId::new("img"),
                labels: spec.labels,
                state: State::Running,
            }
        };
        let observed = [
            container("web", 1),
            container("worker", 1),
            container("worker", 2),
        ];
        let plan = plan(&project, &wanted, &observed).unwrap();
        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|step| {
                let summary = serde_json::to_string(&step.summary()).unwrap();
                format!(
                    "{summary} {}",
                    step.current().map_or("-", |c| c.name.as_str())
                )
            })
            .collect();
        expect![[r#"
            [
                "{\"service\":\"worker\",\"number\":2,\"kind\":\"remove\",\"reason\":\"container demo-worker-2 is a surplus replica\"} demo-worker-2",
                "{\"service\":\"web\",\"kind\":\"unchanged\"} demo-web-1",
                "{\"service\":\"web\",\"number\":2,\"kind\":\"create\",\"reason\":\"no container yet\"} -",
                "{\"service\":\"web\",\"number\":3,\"kind\":\"create\",\"reason\":\"no container yet\"} -",
                "{\"service\":\"worker\",\"kind\":\"unchanged\"} demo-worker-1",
            ]
        "#]].assert_debug_eq(&steps);
    }
}
