//! `OrgActor`: one per organization. It does the cheap, stateful work (rate limits) inside
//! the actor and starts each operation as a future on its own thread that does not hold it:
//! the I/O of one user's call never waits for another's.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use tracing::Instrument;

use super::TenantDeps;
use super::limits::{check_direct, check_keyed};
use super::operation::{OnUser, Operation, OrgState};
use crate::domain::audit::Author;
use crate::domain::{OtpError, UnixMicros};
use crate::store::UserKey;

const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct OrgActor {
    state: Rc<OrgState>,
    user_limiter: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    org_limiter: Option<DefaultDirectRateLimiter>,
}

impl OrgActor {
    pub fn new(org: Arc<str>, deps: Arc<TenantDeps>, policy_generation: Arc<AtomicU64>) -> Self {
        Self {
            user_limiter: deps.limits.per_user.map(RateLimiter::keyed),
            org_limiter: deps.limits.per_org.map(RateLimiter::direct),
            state: Rc::new(OrgState::new(org, deps, policy_generation)),
        }
    }

    fn admit(&self, user: Option<&Arc<str>>) -> Result<(), OtpError> {
        check_direct(self.org_limiter.as_ref())?;
        match user {
            Some(user) => check_keyed(self.user_limiter.as_ref(), user),
            None => Ok(()),
        }
    }
}

impl Actor for OrgActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Keyed limiters remember every key until pruned; prune so memory stays bounded.
        ctx.run_interval(PRUNE_EVERY, |actor, _| {
            if let Some(limiter) = &actor.user_limiter {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// Sent by the registry when it evicts an idle actor that nobody holds.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

impl Handler<Stop> for OrgActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The one message a request sends: run `op` on `user`, at `now`, by `deadline`, in the
/// request's span (so the actor's log lines carry the request id and tenant).
pub struct Run<Op> {
    pub op: Op,
    pub user: Arc<str>,
    /// Who asks: what the call's audit events record.
    pub actor: Arc<Author>,
    pub now: UnixMicros,
    pub deadline: Instant,
    pub span: tracing::Span,
}

impl<Op: Operation> Message for Run<Op> {
    type Result = Result<Op::Output, OtpError>;
}

impl<Op: Operation> Handler<Run<Op>> for OrgActor {
    type Result = ResponseActFuture<Self, Result<Op::Output, OtpError>>;

    fn handle(&mut self, run: Run<Op>, _: &mut Self::Context) -> Self::Result {
        let Run {
            op,
            user,
            actor,
            now,
            deadline,
            span,
        } = run;
        if let Err(err) = span.in_scope(|| self.admit(Op::COUNTS_FOR_USER.then_some(&user))) {
            op.rate_limited(&self.state.deps.metrics);
            return Box::pin(fut::ready(Err(err)));
        }
        let on = OnUser {
            key: UserKey {
                org: self.state.org.clone(),
                user,
            },
            state: self.state.clone(),
            actor,
            now,
            deadline,
        };
        Box::pin(op.run(on).instrument(span).into_actor(self))
    }
}
