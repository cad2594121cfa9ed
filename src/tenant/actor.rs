//! `OrgActor`: one per organization. It does the cheap, stateful work (rate limits, cache)
//! inside the actor and hands the I/O to futures that run without holding it.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, RateLimiter};
use lru::LruCache;
use secrecy::{ExposeSecret, SecretString};

use super::TenantDeps;
use super::limits::{check_direct, check_keyed};
use super::messages::{
    Enroll, Enrollment, FactorView, ListFactors, RemoveFactor, SubmitCode, UnlockFactor,
};
use super::usecases::{self, CacheUpdate, CachedFactor};
use crate::domain::{Details, OtpError, OtpPolicy};
use crate::store::UserKey;

const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct OrgActor {
    org: Arc<str>,
    deps: Arc<TenantDeps>,
    policy: Arc<OtpPolicy>,
    user_limiter: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    org_limiter: Option<DefaultDirectRateLimiter>,
    cache: LruCache<Arc<str>, CachedFactor>,
}

/// A cache bounded at `capacity` whose memory grows with use. `LruCache::new` reserves the
/// whole table up front: 1.3 MB per organization at the default 50,000, even for a tenant
/// with three users (measured: 5,000 organizations took 6 GB).
fn cache_of(capacity: NonZeroUsize) -> LruCache<Arc<str>, CachedFactor> {
    let mut cache = LruCache::unbounded();
    cache.resize(capacity);
    cache
}

impl OrgActor {
    pub fn new(org: Arc<str>, deps: Arc<TenantDeps>) -> Self {
        let capacity = NonZeroUsize::new(deps.cache_capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            policy: deps.policies.for_org(&org),
            org,
            user_limiter: deps.limits.per_user.map(RateLimiter::keyed),
            org_limiter: deps.limits.per_org.map(RateLimiter::direct),
            cache: cache_of(capacity),
            deps,
        }
    }

    fn key(&self, user: &Arc<str>) -> UserKey {
        UserKey {
            org: self.org.clone(),
            user: user.clone(),
        }
    }

    fn admit(&self, user: Option<&Arc<str>>) -> Result<(), OtpError> {
        check_direct(self.org_limiter.as_ref())?;
        match user {
            Some(user) => check_keyed(self.user_limiter.as_ref(), user),
            None => Ok(()),
        }
    }

    fn apply(&mut self, user: Arc<str>, update: CacheUpdate) {
        match update {
            CacheUpdate::Keep => {}
            CacheUpdate::Put(factor) => match self.cache.get_mut(&user) {
                // The common case (a check of a cached factor): update in place.
                Some(cached) => *cached = factor,
                None => {
                    self.cache.put(user, factor);
                }
            },
            CacheUpdate::Evict => {
                self.cache.pop(&user);
            }
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

type Reply<T> = ResponseActFuture<OrgActor, Result<T, OtpError>>;

/// A message with the span of the request that sent it (see `OrgHandle::call`).
pub struct Traced<M> {
    pub msg: M,
    pub span: tracing::Span,
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

/// Each message a request sends, in the request's span.
macro_rules! traced {
    ($($message:ty => $output:ty),* $(,)?) => {$(
        impl Handler<Traced<$message>> for OrgActor {
            type Result = Reply<$output>;

            fn handle(&mut self, traced: Traced<$message>, ctx: &mut Self::Context) -> Self::Result {
                let Traced { msg, span } = traced;
                let work = span.in_scope(|| <Self as Handler<$message>>::handle(self, msg, ctx));
                Box::pin(InSpan { work, span })
            }
        }
    )*};
}

traced!(
    SubmitCode => Details,
    Enroll => Enrollment,
    RemoveFactor => Details,
    UnlockFactor => Details,
    ListFactors => Vec<FactorView>,
);

/// An actor future that runs in a span: entered whenever it is polled.
struct InSpan<F> {
    work: F,
    span: tracing::Span,
}

impl<F> ActorFuture<OrgActor> for InSpan<F>
where
    F: ActorFuture<OrgActor> + Unpin,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        actor: &mut OrgActor,
        ctx: &mut Context<OrgActor>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        std::pin::Pin::new(&mut this.work).poll(actor, ctx, task)
    }
}

fn refuse<T: 'static>(err: OtpError) -> Reply<T> {
    Box::pin(fut::ready(Err(err)))
}

impl Handler<SubmitCode> for OrgActor {
    type Result = Reply<Details>;

    fn handle(&mut self, msg: SubmitCode, _: &mut Self::Context) -> Self::Result {
        if let Err(err) = self.admit(Some(&msg.user)) {
            self.deps.metrics.attempt(msg.purpose, "rate_limited");
            return refuse(err);
        }
        let cached = self.cache.get(&msg.user).cloned();
        let key = self.key(&msg.user);
        let user = msg.user.clone();
        let work = usecases::submit_code(self.deps.clone(), self.policy.clone(), key, msg, cached);
        Box::pin(
            work.into_actor(self)
                .map(move |(result, update), actor, _| {
                    actor.apply(user, update);
                    result
                }),
        )
    }
}

impl Handler<Enroll> for OrgActor {
    type Result = Reply<Enrollment>;

    fn handle(&mut self, msg: Enroll, _: &mut Self::Context) -> Self::Result {
        if let Err(err) = self.admit(Some(&msg.user)) {
            return refuse(err);
        }
        let key = self.key(&msg.user);
        let work = usecases::enroll(
            self.deps.clone(),
            self.policy.clone(),
            key,
            msg.now,
            msg.deadline,
        );
        let user = msg.user;
        let account = msg.account;
        Box::pin(
            work.into_actor(self)
                .map(move |(result, update), actor, _| {
                    actor.apply(user, update);
                    let output = result?;
                    let policy = &actor.policy;
                    let uri = usecases::otpauth_uri(
                        &policy.issuer,
                        &account,
                        &policy.params,
                        output.secret_base32.expose_secret(),
                    );
                    Ok(Enrollment {
                        secret: output.secret_base32,
                        uri: SecretString::from(uri),
                        details: output.details,
                    })
                }),
        )
    }
}

impl Handler<RemoveFactor> for OrgActor {
    type Result = Reply<Details>;

    fn handle(&mut self, msg: RemoveFactor, _: &mut Self::Context) -> Self::Result {
        if let Err(err) = self.admit(None) {
            return refuse(err);
        }
        let work = usecases::remove(
            self.deps.clone(),
            self.key(&msg.user),
            msg.now,
            msg.deadline,
        );
        let user = msg.user;
        Box::pin(work.into_actor(self).map(move |result, actor, _| {
            // Whatever the outcome, the cached copy may no longer hold.
            actor.apply(user, CacheUpdate::Evict);
            result
        }))
    }
}

impl Handler<UnlockFactor> for OrgActor {
    type Result = Reply<Details>;

    fn handle(&mut self, msg: UnlockFactor, _: &mut Self::Context) -> Self::Result {
        if let Err(err) = self.admit(None) {
            return refuse(err);
        }
        let work = usecases::unlock(
            self.deps.clone(),
            self.key(&msg.user),
            msg.now,
            msg.deadline,
        );
        let user = msg.user;
        Box::pin(work.into_actor(self).map(move |result, actor, _| {
            if result.is_ok()
                && let Some(cached) = actor.cache.get_mut(&user)
            {
                cached.lock = None;
            }
            result
        }))
    }
}

impl Handler<ListFactors> for OrgActor {
    type Result = Reply<Vec<FactorView>>;

    fn handle(&mut self, msg: ListFactors, _: &mut Self::Context) -> Self::Result {
        if let Err(err) = self.admit(None) {
            return refuse(err);
        }
        Box::pin(
            usecases::list(self.deps.clone(), self.key(&msg.user), msg.deadline).into_actor(self),
        )
    }
}
