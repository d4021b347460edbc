//! Updating the stack that runs stackhook itself, A/B: the active slot never recreates its own
//! container. It brings the other slot up on the new configuration, waits for it to prove itself
//! healthy, and hands over; only then does the old slot drain and stop. A new slot that never
//! gets healthy is removed and the old one stays active.

use anyhow::{Context, bail};

use crate::slot::Slot;
use crate::stack::compose::{Condition, Project};

use super::apply::{self, Log};
use super::plan::{Action, Plan, Step};
use super::{Deployer, labels};

/// The variable that tells a service of the self stack which slot it is.
pub const SLOT_VARIABLE: &str = "STACKHOOK_SLOT";

impl Deployer {
    /// Carries out the self stack's plan from slot `own`.
    pub(super) async fn update_self(
        &self,
        own: Slot,
        project: &Project,
        plan: &Plan,
        log: &Log,
    ) -> anyhow::Result<()> {
        let own_service = slot_service(project, own)?;
        let other_service = slot_service(project, own.other())?;
        let is_slot = |step: &&Step| step.service == own_service || step.service == other_service;
        let others = Plan {
            steps: plan.steps.iter().filter(|s| !is_slot(s)).cloned().collect(),
        };
        // A slot's own step, not the removal of a surplus container of it.
        let slot_step = |service: &str| {
            plan.steps.iter().find(|step| {
                step.service == service && !matches!(step.action, Action::Remove { .. })
            })
        };
        let own_step = slot_step(&own_service);
        let own_outdated = own_step.is_some_and(|step| !matches!(step.action, Action::Keep { .. }));

        if own_outdated {
            if !self.slots.can_hand_over() {
                bail!(
                    "the self stack changed; the server in slot {own} updates it (send a webhook), \
                     not `stackhook deploy`"
                );
            }
            let other_step = slot_step(&other_service).context("the other slot has no plan")?;
            self.bring_up(project, other_step, log).await?;
            log.line(format!(
                "slot {} is healthy on the new configuration; handing over from slot {own}",
                own.other()
            ));
            let own_container = own_step.and_then(Step::current).map(|c| c.id.clone());
            self.slots.hand_over(own.other(), own_container)?;
        }
        if others.changes_anything() {
            apply::containers(self.engine.as_ref(), project, &others, log).await?;
        }
        Ok(())
    }

    /// Creates, recreates or starts the other slot and waits until it is healthy; removes it
    /// again if it never is.
    async fn bring_up(&self, project: &Project, step: &Step, log: &Log) -> anyhow::Result<()> {
        let service = &step.service;
        let Some(check) = project.services[service]
            .healthcheck
            .as_ref()
            .filter(|c| !c.is_disabled())
        else {
            bail!(
                "service {service} of the self stack needs a healthcheck (on /ready) so that a new slot can prove itself before it takes over"
            );
        };
        let plan = Plan {
            steps: vec![step.clone()],
        };
        let applied = apply::containers(self.engine.as_ref(), project, &plan, log).await;
        let name = labels::container_name(project, service, 1);
        let container = self
            .engine
            .containers(Some(&project.name))
            .await?
            .into_iter()
            .find(|c| c.name == name);
        // An unchanged slot that was already running is checked too: the handover rests on it.
        let healthy = match (applied, &container) {
            (Err(error), _) => Err(error),
            (Ok(()), None) => Err(anyhow::anyhow!("container {name} is gone")),
            (Ok(()), Some(container)) => {
                let engine = self.engine.as_ref();
                apply::wait_for(
                    engine,
                    &container.id,
                    Condition::ServiceHealthy,
                    Some(check),
                )
                .await
            }
        };
        if let Err(error) = healthy {
            if let Some(container) = container {
                log.line(format!("the new slot {name} is not healthy; removing it"));
                let logs = self
                    .engine
                    .logs(&container.id, 30)
                    .await
                    .unwrap_or_default();
                let _ = apply::stop_and_remove(self.engine.as_ref(), &container.id, None).await;
                bail!("service {service}: {error:#}; its last output:\n{logs}");
            }
            return Err(error);
        }
        Ok(())
    }
}

/// The service whose `STACKHOOK_SLOT` names `slot`.
fn slot_service(project: &Project, slot: Slot) -> anyhow::Result<String> {
    project
        .services
        .iter()
        .find(|(_, service)| {
            service
                .environment
                .get(SLOT_VARIABLE)
                .and_then(Option::as_deref)
                .and_then(|value| value.parse::<Slot>().ok())
                == Some(slot)
        })
        .map(|(name, _)| name.clone())
        .with_context(|| {
            format!(
                "the self stack {} has no service with {SLOT_VARIABLE}={slot}",
                project.name
            )
        })
}
