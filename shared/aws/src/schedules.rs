//! One EventBridge Scheduler schedule per source (DESIGN §7): `rate(N minutes)` in
//! Sluice's schedule group, invoking the sync function with `{"source_id"}`.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::primitives::DateTime as AwsDateTime;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState,
    Target,
};
use sluice_core::{Schedule, ScheduleError, Schedules};

/// Where schedules go and what they invoke (template.yaml's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTarget {
    /// `SLUICE_SCHEDULE_GROUP`.
    pub group: String,
    /// `SLUICE_SYNC_FUNCTION_ARN`: the sync function.
    pub function_arn: String,
    /// `SLUICE_SCHEDULER_ROLE_ARN`: the role the scheduler invokes it with.
    pub role_arn: String,
    /// `SLUICE_SCHEDULE_DLQ_ARN`: the SQS queue that keeps invocations the scheduler
    /// could not deliver, once its retries are spent.
    pub dead_letter_arn: Option<String>,
}

pub struct SchedulerSchedules {
    client: Client,
    target: ScheduleTarget,
}

impl SchedulerSchedules {
    pub fn new(client: Client, target: ScheduleTarget) -> Self {
        SchedulerSchedules { client, target }
    }

    /// Schedules of `group` whose rate alone may change (the sync function adapts
    /// frequencies; it neither creates schedules nor knows their target).
    pub fn rates_only(client: Client, group: String) -> Self {
        SchedulerSchedules {
            client,
            target: ScheduleTarget {
                group,
                function_arn: String::new(),
                role_arn: String::new(),
                dead_letter_arn: None,
            },
        }
    }
}

/// `rate(1 minute)`, `rate(5 minutes)`: Scheduler wants the singular for one.
pub fn rate_expression(minutes: u32) -> String {
    match minutes {
        1 => "rate(1 minute)".into(),
        n => format!("rate({n} minutes)"),
    }
}

fn failed(operation: &'static str, source_id: &str, source: sluice_core::BackendError) -> ScheduleError {
    ScheduleError {
        operation,
        source_id: source_id.to_string(),
        source,
    }
}

#[async_trait]
impl Schedules for SchedulerSchedules {
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), ScheduleError> {
        let id = &schedule.source_id;
        if self.target.function_arn.is_empty() {
            return Err(failed(
                "creating",
                id,
                sluice_core::BackendError::message("this process only changes rates (no target configured)"),
            ));
        }
        let input = serde_json::json!({ "source_id": id }).to_string();
        let target = Target::builder()
            .arn(&self.target.function_arn)
            .role_arn(&self.target.role_arn)
            .input(input)
            // A missed invocation is covered by the next one, which reads the same window.
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(2)
                    .maximum_event_age_in_seconds(300)
                    .build(),
            )
            .set_dead_letter_config(
                self.target
                    .dead_letter_arn
                    .as_ref()
                    .map(|arn| DeadLetterConfig::builder().arn(arn).build()),
            )
            .build()
            .map_err(|e| failed("building", id, sluice_core::BackendError::message(e.to_string())))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| failed("building", id, sluice_core::BackendError::message(e.to_string())))?;
        let state = if schedule.enabled {
            ScheduleState::Enabled
        } else {
            ScheduleState::Disabled
        };
        let start = schedule.start_at.map(|t| AwsDateTime::from_secs(t.timestamp()));
        let update = || {
            self.client
                .update_schedule()
                .name(id)
                .group_name(&self.target.group)
                .schedule_expression(rate_expression(schedule.every_minutes))
                .set_start_date(start)
                .state(state.clone())
                .flexible_time_window(window.clone())
                .target(target.clone())
                .action_after_completion(ActionAfterCompletion::None)
                .send()
        };
        match update().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                let create = self
                    .client
                    .create_schedule()
                    .name(id)
                    .group_name(&self.target.group)
                    .description(format!("Sluice: sync source {id}"))
                    .schedule_expression(rate_expression(schedule.every_minutes))
                    .set_start_date(start)
                    .state(state.clone())
                    .flexible_time_window(window.clone())
                    .target(target.clone())
                    .action_after_completion(ActionAfterCompletion::None)
                    .send()
                    .await;
                match create {
                    Ok(_) => Ok(()),
                    // The SDK's retry of a create whose answer was lost (Scheduler's
                    // create takes no request token), or a request racing this one:
                    // the schedule is there, so it is brought up to date.
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => update()
                        .await
                        .map(drop)
                        .map_err(|e| failed("updating", id, crate::aws_error(e))),
                    Err(e) => Err(failed("creating", id, crate::aws_error(e))),
                }
            }
            Err(e) => Err(failed("updating", id, crate::aws_error(e))),
        }
    }

    async fn set_rate(&self, source_id: &str, every_minutes: u32) -> Result<(), ScheduleError> {
        let current = self
            .client
            .get_schedule()
            .name(source_id)
            .group_name(&self.target.group)
            .send()
            .await
            .map_err(|e| failed("reading", source_id, crate::aws_error(e)))?;
        let expression = rate_expression(every_minutes);
        if current.schedule_expression() == Some(expression.as_str()) {
            return Ok(());
        }
        // UpdateSchedule replaces the whole definition: everything else stays as it was.
        self.client
            .update_schedule()
            .name(source_id)
            .group_name(&self.target.group)
            .schedule_expression(expression)
            .set_schedule_expression_timezone(current.schedule_expression_timezone().map(str::to_string))
            .set_start_date(current.start_date().cloned())
            .set_end_date(current.end_date().cloned())
            .set_description(current.description().map(str::to_string))
            .set_state(current.state().cloned())
            .set_flexible_time_window(current.flexible_time_window().cloned())
            .set_target(current.target().cloned())
            .set_action_after_completion(current.action_after_completion().cloned())
            .send()
            .await
            .map_err(|e| failed("updating", source_id, crate::aws_error(e)))?;
        Ok(())
    }

    async fn delete_schedule(&self, source_id: &str) -> Result<(), ScheduleError> {
        match self
            .client
            .delete_schedule()
            .name(source_id)
            .group_name(&self.target.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(failed("deleting", source_id, crate::aws_error(e))),
        }
    }
}
