//! Status conditions (`metav1.Condition`), built so that re-computing an unchanged condition
//! yields an identical one: the transition time moves only when the status does.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The condition `type_` with `status`, `reason` and `message`. Its `lastTransitionTime` is the
/// one in `previous` when that condition had the same status, `now` otherwise.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: None,
    }
}
