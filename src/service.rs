//! What every transport does the same way: the client address, the gates (address limit,
//! token), tenant and role rules, code validation, and the one actor message per call.
//! HTTP and gRPC handlers only translate their wire to these calls and back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use secrecy::SecretString;

use crate::auth::{Caller, TokenVerifier, org_header, user_id};
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
    /// Management calls need a client certificate from the configured CA (mTLS).
    pub management_needs_client_cert: bool,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub readiness: Arc<crate::health::Readiness>,
}

/// Where a request comes from, as its transport saw it.
pub struct Origin<'a> {
    pub peer: Option<IpAddr>,
    /// `X-Forwarded-For` values, in the order received.
    pub forwarded_for: Vec<&'a str>,
    pub authorization: Option<&'a [u8]>,
    /// The connection presented a client certificate that the configured CA signed.
    pub client_certified: bool,
}

/// A caller proven by a token, and what the connection proved: a call's gates passed.
pub struct Authenticated {
    pub caller: Arc<Caller>,
    pub client_certified: bool,
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
    pub async fn authenticate(&self, origin: &Origin<'_>) -> Result<Authenticated, OtpError> {
        if let Some(address) = self.client_address(origin) {
            self.address_limiter.check(address)?;
        }
        self.verifier
            .authenticate(origin.authorization)
            .await
            .map(|caller| {
                tracing::Span::current().record("tenant", caller.org.as_ref());
                Authenticated {
                    caller,
                    client_certified: origin.client_certified,
                }
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
        crate::tenant::OrgActor: actix::Handler<crate::tenant::Traced<M>>,
    {
        self.registry.org(org)?.call(msg, deadline).await
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// The organization and user a management call acts on: the `x-zitadel-orgid` header
    /// (raw, as received) or the caller's own organization, for which the caller must hold
    /// `role`; the user id from the path or message. Over mTLS, a client certificate too.
    fn management_target(
        &self,
        auth: &Authenticated,
        org_header_value: Option<&[u8]>,
        role: &str,
        user: &str,
    ) -> Result<(Arc<str>, Arc<str>), OtpError> {
        if self.management_needs_client_cert && !auth.client_certified {
            return Err(OtpError::ClientCertificateRequired);
        }
        let org = auth
            .caller
            .management_org(org_header(org_header_value)?, role)?;
        tracing::Span::current().record("tenant", org.as_ref());
        Ok((org, user_id(user)?))
    }

    pub async fn add_my(&self, auth: &Authenticated) -> Result<Enrollment, OtpError> {
        let caller = &auth.caller;
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

    pub async fn verify_my(&self, auth: &Authenticated, code: String) -> Result<Details, OtpError> {
        let caller = &auth.caller;
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

    pub async fn remove_my(&self, auth: &Authenticated) -> Result<Details, OtpError> {
        let caller = &auth.caller;
        let deadline = self.deadline();
        let msg = RemoveFactor {
            user: caller.user.clone(),
            now: self.clock.now(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    pub async fn list_my(&self, auth: &Authenticated) -> Result<Vec<FactorView>, OtpError> {
        let caller = &auth.caller;
        let deadline = self.deadline();
        let msg = ListFactors {
            user: caller.user.clone(),
            deadline,
        };
        self.call(&caller.org, msg, deadline).await?
    }

    /// The login check; `org_header` is `x-zitadel-orgid` as received.
    pub async fn check(
        &self,
        auth: &Authenticated,
        org_header: Option<&[u8]>,
        user: &str,
        code: String,
    ) -> Result<Details, OtpError> {
        let (org, user) = self.management_target(auth, org_header, &self.check_role, user)?;
        let deadline = self.deadline();
        let msg = SubmitCode {
            user,
            code: validated(code)?,
            purpose: Purpose::Login,
            now: self.clock.now(),
            deadline,
        };
        self.call(&org, msg, deadline).await?
    }

    pub async fn remove_user(
        &self,
        auth: &Authenticated,
        org_header: Option<&[u8]>,
        user: &str,
    ) -> Result<Details, OtpError> {
        let (org, user) = self.management_target(auth, org_header, &self.admin_role, user)?;
        let (now, deadline) = (self.clock.now(), self.deadline());
        let msg = RemoveFactor {
            user,
            now,
            deadline,
        };
        self.call(&org, msg, deadline).await?
    }

    pub async fn unlock_user(
        &self,
        auth: &Authenticated,
        org_header: Option<&[u8]>,
        user: &str,
    ) -> Result<Details, OtpError> {
        let (org, user) = self.management_target(auth, org_header, &self.admin_role, user)?;
        let (now, deadline) = (self.clock.now(), self.deadline());
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
