//! What every transport does the same way: the client address, the gates (address limit,
//! token), tenant and role rules, code validation, and the one actor message per call.
//! HTTP and gRPC handlers only translate their wire to these calls and back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use secrecy::SecretString;

use crate::auth::{Caller, TokenVerifier};
use crate::clock::SharedClock;
use crate::domain::{Details, OtpError, Purpose};
use crate::tenant::{
    AddressLimiter, Enroll, Enrollment, FactorView, ListFactors, OrgRegistry, RemoveFactor,
    SubmitCode, UnlockFactor,
};

pub struct Gateway {
    pub registry: Arc<OrgRegistry>,
    pub verifier: Arc<TokenVerifier>,
    pub clock: SharedClock,
    /// How long a request may take once it reaches the actors: its deadline, which the
    /// actor call and every store call end by.
    pub request_timeout: Duration,
    pub address_limiter: AddressLimiter,
    pub trusted_proxies: Vec<IpNet>,
    pub check_role: String,
    pub admin_role: String,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub readiness: Arc<crate::health::Readiness>,
}

/// Where a request comes from, as its transport saw it.
pub struct Origin<'a> {
    pub peer: Option<IpAddr>,
    /// `X-Forwarded-For` values, in the order received.
    pub forwarded_for: Vec<&'a str>,
    pub authorization: Option<&'a [u8]>,
}

impl Gateway {
    /// The client: the connection's peer, or, when the peer is a trusted proxy, the nearest
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. An outsider cannot set it.
    pub fn client_address(&self, origin: &Origin<'_>) -> Option<IpAddr> {
        let peer = origin.peer?;
        let is_trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return Some(peer);
        }
        // From the right, where our proxies append: entries further left are the client's
        // own words, so an unparsable one ends the walk rather than being skipped over.
        let entries: Vec<&str> = origin
            .forwarded_for
            .iter()
            .flat_map(|value| value.split(','))
            .collect();
        for entry in entries.into_iter().rev() {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => continue,
                Ok(ip) => return Some(ip),
                Err(_) => break,
            }
        }
        Some(peer)
    }

    /// The gates every call passes before any work: the client address limit, then the token.
    pub async fn caller(&self, origin: &Origin<'_>) -> Result<Arc<Caller>, OtpError> {
        if let Some(address) = self.client_address(origin) {
            self.address_limiter.check(address)?;
        }
        self.verifier
            .authenticate(origin.authorization)
            .await
            .inspect(|caller| {
                tracing::Span::current().record("tenant", caller.org.as_ref());
            })
            .inspect_err(|err| {
                let reason = match err {
                    OtpError::AuthHeaderMissing => "missing",
                    OtpError::AuthHeaderNotBearer => "not_bearer",
                    _ => "invalid",
                };
                self.metrics
                    .token_failures
                    .with_label_values(&[reason])
                    .inc();
            })
    }

    async fn call<M>(
        &self,
        org: &Arc<str>,
        msg: M,
        deadline: Instant,
    ) -> Result<M::Result, OtpError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        crate::tenant::OrgActor: actix::Handler<M>,
    {
        self.registry.org(org)?.call(msg, deadline).await
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    pub async fn add_my(&self, caller: &Caller) -> Result<Enrollment, OtpError> {
        let account = caller
            .login_name
            .clone()
            .unwrap_or_else(|| caller.user.to_string());
        let deadline = self.deadline();
        let msg = Enroll {
            user: caller.user.clone(),
            account,
            now: self.clock.now(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    pub async fn verify_my(&self, caller: &Caller, code: String) -> Result<Details, OtpError> {
        let deadline = self.deadline();
        let msg = SubmitCode {
            user: caller.user.clone(),
            code: validated(code)?,
            purpose: Purpose::Enrollment,
            now: self.clock.now(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    pub async fn remove_my(&self, caller: &Caller) -> Result<Details, OtpError> {
        let deadline = self.deadline();
        let msg = RemoveFactor {
            user: caller.user.clone(),
            now: self.clock.now(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    pub async fn list_my(&self, caller: &Caller) -> Result<Vec<FactorView>, OtpError> {
        let deadline = self.deadline();
        let msg = ListFactors {
            user: caller.user.clone(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    /// The login check; `org_header` is `x-zitadel-orgid`.
    pub async fn check(
        &self,
        caller: &Caller,
        org_header: Option<&str>,
        user: &str,
        code: String,
    ) -> Result<Details, OtpError> {
        let org = caller.management_org(org_header, &self.check_role)?;
        tracing::Span::current().record("tenant", org.as_ref());
        let deadline = self.deadline();
        let msg = SubmitCode {
            user: Arc::from(user),
            code: validated(code)?,
            purpose: Purpose::Login,
            now: self.clock.now(),
            deadline,
        };
        self.call(&org, msg, deadline).await?
    }

    pub async fn remove_user(
        &self,
        caller: &Caller,
        org_header: Option<&str>,
        user: &str,
    ) -> Result<Details, OtpError> {
        let org = caller.management_org(org_header, &self.admin_role)?;
        tracing::Span::current().record("tenant", org.as_ref());
        let (user, now, deadline) = (Arc::from(user), self.clock.now(), self.deadline());
        let msg = RemoveFactor {
            user,
            now,
            deadline,
        };
        self.call(&org, msg, deadline).await?
    }

    pub async fn unlock_user(
        &self,
        caller: &Caller,
        org_header: Option<&str>,
        user: &str,
    ) -> Result<Details, OtpError> {
        let org = caller.management_org(org_header, &self.admin_role)?;
        tracing::Span::current().record("tenant", org.as_ref());
        let (user, now, deadline) = (Arc::from(user), self.clock.now(), self.deadline());
        let msg = UnlockFactor {
            user,
            now,
            deadline,
        };
        self.call(&org, msg, deadline).await?
    }
}

/// The contract's validation: 1..200 characters (not a failed attempt when it fails).
fn validated(code: String) -> Result<SecretString, OtpError> {
    if (1..=200).contains(&code.chars().count()) {
        Ok(SecretString::from(code))
    } else {
        Err(OtpError::CodeLength)
    }
}
