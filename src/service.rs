//! The application's service: what every transport does the same way. The client address,
//! the gates (address limit, token), the tenant and role rules, code validation, and the
//! one operation each call runs in its organization's actor (`tenant::Operation`). HTTP and
//! gRPC handlers only translate their wire to these calls and back.
//!
//! Authorization is carried by types: every operation takes the scope it acts in, and
//! only the checks here build scopes. A `me` call takes an `OwnScope` (the token's own
//! user); a management call an `OrgScope<Check>` or `OrgScope<Admin>`, which
//! `OtpService::org_scope` builds only after the role check (and, over mTLS, the client
//! certificate); a v2 user-API call a `UserScope`, one of the two; a call on an organization
//! as a whole (its policies, its locked users) a `TenantScope<R>`. A new operation that skips
//! the check does not compile.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use secrecy::SecretString;

use crate::auth::{Caller, TokenVerifier, org_header, user_id};
use crate::clock::SharedClock;
use crate::domain::audit::{
    AddressRecording, AuditEvent, Author, EventFilter, EventKind, Retention,
};
use crate::domain::ids::is_valid_id;
use crate::domain::policy::{CustomLockout, OtpSettings, Stamped, WriteMode};
use crate::domain::recovery::MAX_CODES;
use crate::domain::webhook::{DEFAULT_KINDS, check_target, secret_text};
use crate::domain::{Details, FactorState, OtpError, Purpose, UnixMicros};
use crate::store::{
    PendingDelivery, PolicyPart, PolicyWrite, PolicyWritten, Stamp, StoredEndpoint, UserKey,
    UserRecord, entry_id,
};
use crate::tenant::{
    AddressLimiter, Enroll, Enrollment, FactorView, GenerateCodes, GeneratedCodes, InspectUser,
    ListFactors, LockedPage, Operation, OrgRegistry, PolicyDirectory, RedeemCode, RemoveCodes,
    RemoveFactor, Requester, SubmitCode, UnlockFactor, locked_users, store_error,
};

pub struct OtpService {
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
    pub policy_read_role: String,
    pub policy_write_role: String,
    pub policies: PolicyDirectory,
    /// How much of the client's address audit events keep.
    pub address_recording: AddressRecording,
    /// Webhook endpoints may name private, loopback and link-local targets.
    pub webhook_private_targets: bool,
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
    /// The request's id (`telemetry::RequestId`), for its audit events.
    pub request_id: &'a str,
}

/// A caller proven by a token, and what the connection proved: a call's gates passed.
pub struct Authenticated {
    pub caller: Arc<Caller>,
    pub client_certified: bool,
    /// The caller as the audit events of its changes record it.
    pub actor: Arc<Author>,
}

impl Authenticated {
    /// The scope of a `me` call: the token's own organization and user.
    pub fn own(&self) -> OwnScope {
        OwnScope {
            org: self.caller.org.clone(),
            user: self.caller.user.clone(),
            actor: self.actor.clone(),
        }
    }
}

/// The user a `me` call acts on: the verified token's own. Built only by
/// `Authenticated::own`.
pub struct OwnScope {
    org: Arc<str>,
    user: Arc<str>,
    actor: Arc<Author>,
}

/// The role a management call needs in the organization it acts on: any one of `names`.
pub trait Role {
    fn names(service: &OtpService) -> Vec<&str>;
}

/// The login check (`auth.check_role`).
pub struct Check;
/// Removal, unlock and the admin views (`auth.admin_role`).
pub struct Admin;
/// Reads of the organization's policies: `auth.admin_role` or `auth.policy_read_role`.
pub struct PolicyRead;
/// Changes of the organization's policies: `auth.admin_role` or `auth.policy_write_role`.
pub struct PolicyChange;

impl Role for Check {
    fn names(service: &OtpService) -> Vec<&str> {
        vec![&service.check_role]
    }
}

impl Role for Admin {
    fn names(service: &OtpService) -> Vec<&str> {
        vec![&service.admin_role]
    }
}

impl Role for PolicyRead {
    fn names(service: &OtpService) -> Vec<&str> {
        vec![&service.admin_role, &service.policy_read_role]
    }
}

impl Role for PolicyChange {
    fn names(service: &OtpService) -> Vec<&str> {
        vec![&service.admin_role, &service.policy_write_role]
    }
}

/// An organization a management call acts on as a whole (its policies, its locked users)
/// with role `R`. Built only by `OtpService::tenant_scope`, once the caller was found to hold
/// `R` there.
pub struct TenantScope<R: Role> {
    org: Arc<str>,
    actor: Arc<Author>,
    role: PhantomData<R>,
}

/// The user a v2 user-API call acts on (`/v2/users/{user_id}/…`): the caller's own, in the
/// caller's organization, or anyone's in an organization where the caller is an admin.
/// Built only by `OtpService::user_scope` (and, for the admin case, `org_scope`).
pub enum UserScope {
    Own(OwnScope),
    Admin(OrgScope<Admin>),
}

/// A user of an organization that a management call may act on with role `R`. Built only by
/// `OtpService::org_scope`, once the caller was found to hold `R` there.
pub struct OrgScope<R: Role> {
    org: Arc<str>,
    user: Arc<str>,
    actor: Arc<Author>,
    role: PhantomData<R>,
}

impl OtpService {
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
        let address = self.client_address(origin);
        if let Some(address) = address {
            self.address_limiter.check(address)?;
        }
        self.verifier
            .authenticate(origin.authorization)
            .await
            .map(|caller| {
                tracing::Span::current().record("tenant", caller.org.as_ref());
                let actor = Arc::new(Author {
                    request_id: Arc::from(origin.request_id),
                    user: caller.user.clone(),
                    org: caller.org.clone(),
                    address: self.address_recording.record(address).map(Arc::from),
                });
                Authenticated {
                    caller,
                    client_certified: origin.client_certified,
                    actor,
                }
            })
            .inspect_err(|err| {
                let reason = match err {
                    OtpError::AuthHeaderMissing => "missing",
                    OtpError::AuthHeaderNotBearer => "not_bearer",
                    OtpError::TokenCheckUnavailable => "unchecked",
                    _ => "invalid",
                };
                self.metrics
                    .token_failures
                    .with_label_values(&[reason])
                    .inc();
            })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// The organization and user a management call acts on, for role `R`: the
    /// `x-zitadel-orgid` header (raw, as received) or the caller's own organization, in which
    /// the caller must hold `R`; the user id from the path or message. Over mTLS, a client
    /// certificate too.
    pub fn org_scope<R: Role>(
        &self,
        auth: &Authenticated,
        org_header_value: Option<&[u8]>,
        user: &str,
    ) -> Result<OrgScope<R>, OtpError> {
        let TenantScope { org, actor, .. } = self.tenant_scope::<R>(auth, org_header_value)?;
        Ok(OrgScope {
            org,
            user: user_id(user)?,
            actor,
            role: PhantomData,
        })
    }

    /// The organization a management call on it as a whole acts on, for role `R`: as
    /// `org_scope`, without a user.
    pub fn tenant_scope<R: Role>(
        &self,
        auth: &Authenticated,
        org_header_value: Option<&[u8]>,
    ) -> Result<TenantScope<R>, OtpError> {
        if self.management_needs_client_cert && !auth.client_certified {
            return Err(OtpError::ClientCertificateRequired);
        }
        let org = auth
            .caller
            .management_org(org_header(org_header_value)?, &R::names(self))?;
        tracing::Span::current().record("tenant", org.as_ref());
        Ok(TenantScope {
            org,
            actor: auth.actor.clone(),
            role: PhantomData,
        })
    }

    /// The scope of a v2 call on `user`: the caller's own user (in its own organization, or
    /// with `x-zitadel-orgid` naming that same organization) needs no role, as in ZITADEL;
    /// anyone else needs `auth.admin_role` in the organization acted in.
    pub fn user_scope(
        &self,
        auth: &Authenticated,
        org_header_value: Option<&[u8]>,
        user: &str,
    ) -> Result<UserScope, OtpError> {
        let header_org = org_header(org_header_value)?;
        let caller = &auth.caller;
        let own_org = header_org.as_ref().is_none_or(|org| *org == caller.org);
        if own_org && *caller.user == *user {
            tracing::Span::current().record("tenant", caller.org.as_ref());
            return Ok(UserScope::Own(auth.own()));
        }
        self.org_scope(auth, org_header_value, user)
            .map(UserScope::Admin)
    }

    /// v2 RegisterTOTP: the account shown in the app is the caller's login name when the
    /// users are the same, else the user id.
    pub async fn register_totp(
        &self,
        auth: &Authenticated,
        scope: UserScope,
    ) -> Result<Enrollment, OtpError> {
        match scope {
            UserScope::Own(_) => self.add_my(auth).await,
            UserScope::Admin(scope) => {
                let account = scope.user.to_string();
                self.run(scope, Enroll { account }).await
            }
        }
    }

    pub async fn verify_totp_registration(
        &self,
        scope: UserScope,
        code: String,
    ) -> Result<Details, OtpError> {
        let code = validated(code)?;
        let purpose = Purpose::Enrollment;
        self.run(scope, SubmitCode { code, purpose }).await
    }

    pub async fn remove_totp(&self, scope: UserScope) -> Result<Details, OtpError> {
        self.run(scope, RemoveFactor).await
    }

    /// v2 ListAuthenticationFactors: the user's factor when the filter takes it.
    pub async fn list_authentication_factors(
        &self,
        scope: UserScope,
        filter: FactorFilter,
    ) -> Result<Vec<FactorView>, OtpError> {
        let factors = self.run(scope, ListFactors).await?;
        Ok(filter.apply(factors.totp))
    }

    /// v2 ListAuthenticationMethodTypes: TOTP when the user's factor is READY (a factor
    /// not yet verified is no way to authenticate), recovery codes while any are left.
    pub async fn authentication_methods(
        &self,
        scope: UserScope,
    ) -> Result<Vec<AuthenticationMethod>, OtpError> {
        let factors = self.run(scope, ListFactors).await?;
        let ready = factors
            .totp
            .iter()
            .any(|factor| factor.state == FactorState::Ready);
        let mut methods = Vec::with_capacity(2);
        if ready {
            methods.push(AuthenticationMethod::Totp);
        }
        if factors.recovery_codes > 0 {
            methods.push(AuthenticationMethod::RecoveryCode);
        }
        Ok(methods)
    }

    /// v2 GenerateRecoveryCodes: `count` codes (0: the organization's default), added to the
    /// codes left. The user needs a current TOTP code when their factor is READY; an admin
    /// needs none.
    pub async fn generate_recovery_codes(
        &self,
        scope: UserScope,
        count: i32,
        totp_code: String,
    ) -> Result<GeneratedCodes, OtpError> {
        let requester = match &scope {
            UserScope::Own(_) => Requester::User {
                totp_code: (!totp_code.is_empty())
                    .then(|| validated(totp_code))
                    .transpose()?,
            },
            UserScope::Admin(_) => Requester::Admin,
        };
        let count = match u32::try_from(count) {
            Ok(0) => None,
            Ok(count) if count <= MAX_CODES => Some(count),
            _ => return Err(OtpError::RecoveryCodeCountInvalid),
        };
        self.run(scope, GenerateCodes { count, requester }).await
    }

    /// v2 RemoveRecoveryCodes: all of them; refused while the user is locked.
    pub async fn remove_recovery_codes(&self, scope: UserScope) -> Result<Details, OtpError> {
        self.run(scope, RemoveCodes).await
    }

    /// How many recovery codes the user holds (tessera's view; never the codes).
    pub async fn recovery_codes_left(&self, scope: UserScope) -> Result<u32, OtpError> {
        Ok(self.run(scope, ListFactors).await?.recovery_codes)
    }

    pub async fn add_my(&self, auth: &Authenticated) -> Result<Enrollment, OtpError> {
        let caller = &auth.caller;
        let account = caller
            .login_name
            .clone()
            .unwrap_or_else(|| caller.user.to_string());
        self.run(auth.own(), Enroll { account }).await
    }

    pub async fn verify_my(&self, scope: OwnScope, code: String) -> Result<Details, OtpError> {
        let code = validated(code)?;
        let purpose = Purpose::Enrollment;
        self.run(scope, SubmitCode { code, purpose }).await
    }

    pub async fn remove_my(&self, scope: OwnScope) -> Result<Details, OtpError> {
        self.run(scope, RemoveFactor).await
    }

    /// v1 ListMyAuthFactors: READY factors only, as ZITADEL lists them.
    pub async fn list_my(&self, scope: OwnScope) -> Result<Vec<FactorView>, OtpError> {
        let ready_only = FactorFilter::new(&[], &[]);
        let factors = self.run(scope, ListFactors).await?;
        Ok(ready_only.apply(factors.totp))
    }

    /// The login check: a TOTP code, or a recovery code in its place (exactly one; an empty
    /// field is an absent one, as proto3 has it).
    pub async fn check(
        &self,
        scope: OrgScope<Check>,
        code: String,
        recovery_code: String,
    ) -> Result<Checked, OtpError> {
        match (code.is_empty(), recovery_code.is_empty()) {
            (false, false) => Err(OtpError::CodeOrRecoveryCode),
            (true, false) => {
                let code = validated(recovery_code)?;
                let redeemed = self.run(scope, RedeemCode { code }).await?;
                Ok(Checked {
                    details: redeemed.details,
                    recovery_codes_remaining: Some(redeemed.remaining),
                })
            }
            _ => {
                let code = validated(code)?;
                let purpose = Purpose::Login;
                let details = self.run(scope, SubmitCode { code, purpose }).await?;
                Ok(Checked {
                    details,
                    recovery_codes_remaining: None,
                })
            }
        }
    }

    pub async fn remove_user(&self, scope: OrgScope<Admin>) -> Result<Details, OtpError> {
        self.run(scope, RemoveFactor).await
    }

    pub async fn unlock_user(&self, scope: OrgScope<Admin>) -> Result<Details, OtpError> {
        self.run(scope, UnlockFactor).await
    }

    /// ZITADEL's ListHumanAuthFactors: the user's READY factors, as ZITADEL lists them.
    pub async fn list_human_auth_factors(
        &self,
        scope: OrgScope<Admin>,
    ) -> Result<Vec<FactorView>, OtpError> {
        let ready_only = FactorFilter::new(&[], &[]);
        let factors = self.run(scope, ListFactors).await?;
        Ok(ready_only.apply(factors.totp))
    }

    /// tessera's admin view of one user: the factor, the lockout standing, the codes left.
    pub async fn user_factor(&self, scope: OrgScope<Admin>) -> Result<UserView, OtpError> {
        let now = self.clock.now();
        let record = self.run(scope, InspectUser).await?;
        Ok(UserView::of(record, now))
    }

    /// One page of the organization's locked users (`tenant::locked_users`): `page_size` 0
    /// is 100, at most 1000; `page_token` is the last page's `next_page_token`.
    pub async fn locked_users(
        &self,
        scope: TenantScope<Admin>,
        page_size: u32,
        page_token: &str,
    ) -> Result<LockedPage, OtpError> {
        const DEFAULT_PAGE: usize = 100;
        const MAX_PAGE: usize = 1000;
        let limit = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE,
            Ok(size) => size.min(MAX_PAGE),
            Err(_) => MAX_PAGE,
        };
        let after = match page_token {
            "" => None,
            token if is_valid_id(token) => Some(token),
            _ => return Err(OtpError::PageTokenInvalid),
        };
        let deps = self.registry.deps();
        let (now, deadline) = (self.clock.now(), self.deadline());
        locked_users(deps, &scope.org, after, limit, now, deadline).await
    }

    /// One user's events, newest first, straight from the list each change appends to;
    /// `page_token` is the last page's `next_page_token`.
    pub async fn user_events(
        &self,
        scope: OrgScope<Admin>,
        page_size: u32,
        page_token: &str,
    ) -> Result<EventPage, OtpError> {
        let limit = page_limit(page_size);
        let before = event_cursor(page_token)?;
        let key = UserKey {
            org: scope.org,
            user: scope.user,
        };
        let events = self
            .registry
            .deps()
            .store
            .user_events(&key, before, limit, self.deadline())
            .await
            .map_err(store_error)?;
        let next = (events.len() == limit)
            .then(|| events.last().map(|event| event.id.clone()))
            .flatten();
        Ok(EventPage { events, next })
    }

    /// The organization's events that `filter` asks for, newest first, from its feed (see
    /// `tenant::AuditFeed` for how it lags the users' own lists). A page may hold fewer
    /// than `page_size` while more follow: at most `SCAN` entries are read per call, and
    /// `next` says where to go on.
    pub async fn org_events(
        &self,
        scope: TenantScope<Admin>,
        filter: EventFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<EventPage, OtpError> {
        const SCAN: usize = 10_000;
        let limit = page_limit(page_size);
        let batch = limit.max(100);
        let mut before = event_cursor(page_token)?.map(str::to_owned);
        let store = &self.registry.deps().store;
        let deadline = self.deadline();
        let mut events = Vec::with_capacity(limit);
        let mut scanned = 0;
        loop {
            let read = store
                .feed_events(&scope.org, before.as_deref(), batch, deadline)
                .await
                .map_err(store_error)?;
            let complete = read.len() < batch;
            for event in read {
                scanned += 1;
                // The feed is in the order of copying (Redis's clock), and a copy comes after
                // its event (the replica's clock, within `CLOCK_MARGIN_MS` of Redis's, as
                // readiness holds it): an entry copied that long before `since` ends the
                // search, and every older one with it.
                const CLOCK_MARGIN_MS: i64 = 60_000;
                let copied_ms = entry_id(&event.id).map_or(0, |(ms, _)| ms);
                if filter.since.is_some_and(|since| {
                    i64::try_from(copied_ms).unwrap_or(i64::MAX) < since.0 / 1000 - CLOCK_MARGIN_MS
                }) {
                    return Ok(EventPage { events, next: None });
                }
                before = Some(event.id.clone());
                if filter.matches(&event) {
                    events.push(event);
                    if events.len() == limit {
                        return Ok(EventPage {
                            events,
                            next: before,
                        });
                    }
                }
            }
            if complete {
                return Ok(EventPage { events, next: None });
            }
            if scanned >= SCAN {
                return Ok(EventPage {
                    events,
                    next: before,
                });
            }
        }
    }

    /// Registers a webhook endpoint of the organization: its secret made here, sealed at
    /// rest, and shown once in the answer.
    pub async fn add_webhook(
        &self,
        scope: TenantScope<Admin>,
        url: &str,
        kinds: Vec<EventKind>,
    ) -> Result<NewWebhook, OtpError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| OtpError::WebhookTargetRefused("the URL does not parse".into()))?;
        check_target(
            parsed.scheme(),
            parsed.host_str(),
            self.webhook_private_targets,
        )
        .map_err(|refused| OtpError::WebhookTargetRefused(refused.to_string()))?;
        let kinds = if kinds.is_empty() {
            DEFAULT_KINDS.to_vec()
        } else {
            kinds
        };
        let secret = crate::seal::fresh_secret(24)?;
        let mut id = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let deps = self.registry.deps();
        let sealed = deps.keys.seal(&secret, &scope.org, &id).map_err(|err| {
            tracing::error!(error = %err, "sealing a webhook secret failed");
            OtpError::Internal
        })?;
        let now = self.clock.now();
        let endpoint = StoredEndpoint {
            id,
            org: scope.org.to_string(),
            url: parsed.to_string(),
            kinds: kinds.iter().map(|kind| kind.as_str().to_owned()).collect(),
            sealed_secret: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                sealed,
            ),
            created_at: now.0,
        };
        deps.store
            .put_endpoint(&endpoint, self.deadline())
            .await
            .map_err(store_error)?;
        Ok(NewWebhook {
            secret: SecretString::from(secret_text(&secret)),
            endpoint,
        })
    }

    /// The organization's webhook endpoints (never their secrets).
    pub async fn webhooks(
        &self,
        scope: TenantScope<Admin>,
    ) -> Result<Vec<StoredEndpoint>, OtpError> {
        let all = self
            .registry
            .deps()
            .store
            .endpoints(self.deadline())
            .await
            .map_err(store_error)?;
        Ok(all
            .into_iter()
            .filter(|endpoint| *endpoint.org == *scope.org)
            .collect())
    }

    pub async fn remove_webhook(
        &self,
        scope: TenantScope<Admin>,
        id: &str,
    ) -> Result<(), OtpError> {
        let removed = self
            .registry
            .deps()
            .store
            .delete_endpoint(&scope.org, id, self.deadline())
            .await
            .map_err(store_error)?;
        if removed {
            Ok(())
        } else {
            Err(OtpError::WebhookNotFound)
        }
    }

    /// Deliveries given up after the retry period, newest first.
    pub async fn dead_letters(
        &self,
        scope: TenantScope<Admin>,
    ) -> Result<Vec<PendingDelivery>, OtpError> {
        self.registry
            .deps()
            .store
            .dead_letters(&scope.org, self.deadline())
            .await
            .map_err(store_error)
    }

    /// Every dead letter back to be tried now, with a new retry period; how many.
    pub async fn replay_dead_letters(&self, scope: TenantScope<Admin>) -> Result<usize, OtpError> {
        let now = self.clock.now();
        self.registry
            .deps()
            .store
            .replay_dead_letters(&scope.org, now, self.deadline())
            .await
            .map_err(store_error)
    }

    /// ZITADEL's GetLockoutPolicy: the organization's own, else the instance's.
    pub async fn lockout_policy(
        &self,
        scope: TenantScope<PolicyRead>,
    ) -> Result<LockoutPolicyView, OtpError> {
        let policies = self.policies.read(&scope.org, self.deadline()).await?;
        let sequence = policies.stored.sequence;
        Ok(match policies.stored.lockout {
            Some(custom) => LockoutPolicyView {
                policy: custom.value,
                is_default: false,
                details: stamped_details(&custom, sequence, &scope.org),
            },
            None => LockoutPolicyView {
                policy: self.default_lockout(),
                is_default: true,
                details: Details::default_policy(scope.org),
            },
        })
    }

    /// ZITADEL's GetDefaultLockoutPolicy: the instance's.
    pub fn default_lockout_policy(&self, scope: TenantScope<PolicyRead>) -> LockoutPolicyView {
        LockoutPolicyView {
            policy: self.default_lockout(),
            is_default: true,
            details: Details::default_policy(scope.org),
        }
    }

    fn default_lockout(&self) -> CustomLockout {
        CustomLockout {
            max_otp_attempts: self.policies.default_policy().lockout().max_attempts,
            max_password_attempts: 0,
        }
    }

    /// ZITADEL's AddCustomLockoutPolicy (`WriteMode::Add`), UpdateCustomLockoutPolicy
    /// (`Update`) and ResetLockoutPolicyToDefault (`Reset`, `policy` unused), with
    /// ZITADEL's errors.
    pub async fn write_lockout_policy(
        &self,
        scope: TenantScope<PolicyChange>,
        mode: WriteMode,
        policy: CustomLockout,
    ) -> Result<Details, OtpError> {
        let write = match mode {
            WriteMode::Reset => PolicyWrite::reset(PolicyPart::Lockout, mode),
            _ => PolicyWrite::lockout(mode, &policy),
        };
        let now = self.clock.now();
        let written = self.write_policy(&scope, write, now).await?;
        match (written, mode) {
            (PolicyWritten::Written { sequence }, WriteMode::Add) => {
                Ok(Details::created(sequence, now, scope.org))
            }
            (PolicyWritten::Written { sequence }, _) => {
                Ok(Details::changed(sequence, now, scope.org))
            }
            (PolicyWritten::Exists, _) => Err(OtpError::LockoutPolicyExists),
            (PolicyWritten::Absent { .. }, WriteMode::Reset) => {
                Err(OtpError::LockoutPolicyNotFoundOnReset)
            }
            (PolicyWritten::Absent { .. }, _) => Err(OtpError::LockoutPolicyNotFound),
            (PolicyWritten::Unchanged { .. }, _) => Err(OtpError::LockoutPolicyNotChanged),
        }
    }

    /// tessera's GetOtpPolicy: the organization's own, else the instance's.
    pub async fn otp_policy(
        &self,
        scope: TenantScope<PolicyRead>,
    ) -> Result<OtpPolicyView, OtpError> {
        let policies = self.policies.read(&scope.org, self.deadline()).await?;
        let sequence = policies.stored.sequence;
        let retention = policies.effective.retention();
        Ok(match policies.stored.otp {
            Some(custom) => OtpPolicyView {
                settings: custom.value.clone(),
                retention,
                is_default: false,
                details: stamped_details(&custom, sequence, &scope.org),
            },
            None => OtpPolicyView {
                settings: OtpSettings::of(self.policies.default_policy()),
                retention,
                is_default: true,
                details: Details::default_policy(scope.org),
            },
        })
    }

    /// tessera's SetOtpPolicy: the fields given, the instance's for the others; checked
    /// whole, then stored (the same again changes nothing).
    pub async fn set_otp_policy(
        &self,
        scope: TenantScope<PolicyChange>,
        request: OtpSettingsRequest,
    ) -> Result<Details, OtpError> {
        let settings = request.over(OtpSettings::of(self.policies.default_policy()))?;
        // The failures that lock are the lockout policy's: any number checks the rest.
        let max_attempts = self.policies.default_policy().lockout().max_attempts;
        settings
            .policy(max_attempts)
            .map_err(|problems| OtpError::PolicyInvalid(problems.join("; ")))?;
        let now = self.clock.now();
        let write = PolicyWrite::otp(WriteMode::Set, &settings);
        self.declarative(scope, write, now).await
    }

    /// tessera's ResetOtpPolicy: back to the instance's (already there: no error).
    pub async fn reset_otp_policy(
        &self,
        scope: TenantScope<PolicyChange>,
    ) -> Result<Details, OtpError> {
        let write = PolicyWrite::reset(PolicyPart::Otp, WriteMode::Reset);
        self.declarative(scope, write, self.clock.now()).await
    }

    /// A Set or Reset: every outcome is the state asked for, with the sequence it has.
    async fn declarative(
        &self,
        scope: TenantScope<PolicyChange>,
        write: PolicyWrite,
        now: UnixMicros,
    ) -> Result<Details, OtpError> {
        match self.write_policy(&scope, write, now).await? {
            PolicyWritten::Written { sequence } => Ok(Details::changed(sequence, now, scope.org)),
            PolicyWritten::Absent { sequence } | PolicyWritten::Unchanged { sequence } => {
                Ok(Details {
                    sequence,
                    creation_date: None,
                    change_date: None,
                    resource_owner: scope.org,
                })
            }
            PolicyWritten::Exists => Err(OtpError::Internal),
        }
    }

    /// One change of the organization's policies, with its `policy_changed` event, kept as
    /// long as the organization keeps events now.
    async fn write_policy(
        &self,
        scope: &TenantScope<PolicyChange>,
        write: PolicyWrite,
        now: UnixMicros,
    ) -> Result<PolicyWritten, OtpError> {
        let part = write.part.field();
        let deadline = self.deadline();
        let retention = self
            .policies
            .read(&scope.org, deadline)
            .await?
            .effective
            .retention();
        let stamp = Stamp {
            now,
            actor: scope.actor.clone(),
            retention,
        };
        let written = self
            .policies
            .write(&scope.org, write, &stamp, deadline)
            .await?;
        if let PolicyWritten::Written { .. } = written {
            self.metrics.policy_changes.with_label_values(&[part]).inc();
            tracing::info!(part, "the organization's policy changed");
        }
        Ok(written)
    }

    /// Runs `op` on the scope's user in its organization's actor, stamped with the clock's
    /// time and the request's deadline. Private: only the methods above, each of which
    /// names the scope its operation needs, reach it.
    async fn run<Op: Operation>(
        &self,
        scope: impl Into<Target>,
        op: Op,
    ) -> Result<Op::Output, OtpError> {
        let Target { org, user, actor } = scope.into();
        let (now, deadline) = (self.clock.now(), self.deadline());
        self.registry
            .org(&org)?
            .run(user, actor, op, now, deadline)
            .await
    }
}

/// A page size as the listings take it: 0 is 100, at most 1000.
fn page_limit(page_size: u32) -> usize {
    match usize::try_from(page_size) {
        Ok(0) => 100,
        Ok(size) => size.min(1000),
        Err(_) => 1000,
    }
}

/// A page token of the event listings: empty, or an event id one of them gave.
fn event_cursor(page_token: &str) -> Result<Option<&str>, OtpError> {
    match page_token {
        "" => Ok(None),
        token if entry_id(token).is_some() => Ok(Some(token)),
        _ => Err(OtpError::PageTokenInvalid),
    }
}

/// A webhook endpoint just registered, and its secret (shown this once).
pub struct NewWebhook {
    pub endpoint: StoredEndpoint,
    pub secret: SecretString,
}

/// One page of events, and where the next starts (none: the last).
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<AuditEvent>,
    pub next: Option<String>,
}

/// The details of a stored policy part: the organization's policy sequence, the part's dates.
fn stamped_details<T>(part: &Stamped<T>, sequence: u64, org: &Arc<str>) -> Details {
    Details {
        sequence,
        creation_date: Some(part.created_at),
        change_date: Some(part.changed_at),
        resource_owner: org.clone(),
    }
}

/// tessera's SetOtpPolicy as asked: each field, or none for the instance's value.
#[derive(Debug, Clone, Default)]
pub struct OtpSettingsRequest {
    pub issuer: Option<String>,
    pub algorithm: Option<crate::domain::HashAlgorithm>,
    pub digits: Option<u32>,
    pub period_secs: Option<u32>,
    pub skew: Option<u32>,
    pub lock_duration_secs: Option<u32>,
    pub show_failures: Option<bool>,
    pub recovery_codes: Option<u32>,
    pub audit_max_events_per_user: Option<u32>,
    pub audit_max_events: Option<u32>,
    pub audit_max_age_days: Option<u32>,
}

impl OtpSettingsRequest {
    /// The settings asked, over `default`'s. A number too large for its field is named.
    fn over(self, default: OtpSettings) -> Result<OtpSettings, OtpError> {
        let narrow = |name: &str, value: Option<u32>, fallback: u8| -> Result<u8, OtpError> {
            value.map_or(Ok(fallback), |value| {
                u8::try_from(value)
                    .map_err(|_| OtpError::PolicyInvalid(format!("{name} {value} is too large")))
            })
        };
        Ok(OtpSettings {
            issuer: self.issuer.unwrap_or(default.issuer),
            algorithm: self.algorithm.unwrap_or(default.algorithm),
            digits: narrow("digits", self.digits, default.digits)?,
            period_secs: self.period_secs.unwrap_or(default.period_secs),
            skew: narrow("skew", self.skew, default.skew)?,
            lock_duration_secs: self
                .lock_duration_secs
                .map_or(default.lock_duration_secs, u64::from),
            show_failures: self.show_failures.unwrap_or(default.show_failures),
            recovery_codes: self.recovery_codes.unwrap_or(default.recovery_codes),
            retention: default.retention.map(|retention| Retention {
                max_events_per_user: self
                    .audit_max_events_per_user
                    .unwrap_or(retention.max_events_per_user),
                max_events: self.audit_max_events.unwrap_or(retention.max_events),
                max_age_days: self.audit_max_age_days.unwrap_or(retention.max_age_days),
            }),
        })
    }
}

/// A lockout policy as ZITADEL's GetLockoutPolicy shows it.
pub struct LockoutPolicyView {
    pub policy: CustomLockout,
    /// The organization follows the instance's (it set none, or reset it).
    pub is_default: bool,
    pub details: Details,
}

/// tessera's OTP policy of an organization as its Get shows it.
pub struct OtpPolicyView {
    pub settings: OtpSettings,
    /// The audit trail's retention that applies (a stored policy older than the setting
    /// follows the instance's).
    pub retention: Retention,
    pub is_default: bool,
    pub details: Details,
}

/// An admin's view of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    /// The TOTP factor, if the user has one.
    pub factor: Option<FactorSummary>,
    /// Consecutive failures (TOTP and recovery codes) since the last success or unlock.
    pub failures: u32,
    /// The active lock, if any (an expired one is none).
    pub lock: Option<crate::domain::Lock>,
    pub recovery_codes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorSummary {
    pub state: FactorState,
    pub created_at: UnixMicros,
    /// The start of the time step of the last code accepted (at enrollment's verification
    /// or a login check), to the step: the record keeps the step, for replay protection.
    pub last_success: Option<UnixMicros>,
}

impl UserView {
    fn of(record: UserRecord, now: UnixMicros) -> Self {
        let lock = record.standing.lock.filter(|lock| lock.is_active(now));
        Self {
            factor: record.factor.map(|factor| FactorSummary {
                state: factor.state,
                created_at: factor.created_at,
                last_success: factor.last_step.map(|step| {
                    let secs = step.saturating_mul(u64::from(factor.params.period_secs()));
                    UnixMicros::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
                }),
            }),
            // An expired lock's count starts again at the next attempt.
            failures: if record.standing.lock.is_some() && lock.is_none() {
                0
            } else {
                record.standing.failures
            },
            lock,
            recovery_codes: record.recovery_codes,
        }
    }
}

/// The login check's answer: the change, and with a recovery code the codes left.
pub struct Checked {
    pub details: Details,
    pub recovery_codes_remaining: Option<u32>,
}

/// The ways of authenticating a v2 listing may name; tessera holds TOTP and recovery codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticationMethod {
    Totp,
    RecoveryCode,
}

/// A kind of factor a v2 listing asks for: tessera holds OTP (TOTP) factors only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorKind {
    Otp,
    /// SMS, email, U2F: ZITADEL's, never here.
    Other,
}

/// A factor state a v2 listing asks for; `Other` (unspecified, removed) matches nothing here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateQuery {
    Ready,
    NotReady,
    Other,
}

/// Which factors a v2 listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorFilter {
    otp: bool,
    states: Vec<FactorState>,
}

impl FactorFilter {
    /// No kinds asked: every kind. No states asked: READY only (a factor that was never
    /// verified is listed only when asked for).
    pub fn new(kinds: &[FactorKind], states: &[StateQuery]) -> Self {
        let otp = kinds.is_empty() || kinds.contains(&FactorKind::Otp);
        let states = if states.is_empty() {
            vec![FactorState::Ready]
        } else {
            states
                .iter()
                .filter_map(|state| match state {
                    StateQuery::Ready => Some(FactorState::Ready),
                    StateQuery::NotReady => Some(FactorState::NotReady),
                    StateQuery::Other => None,
                })
                .collect()
        };
        Self { otp, states }
    }

    fn apply(&self, factors: Vec<FactorView>) -> Vec<FactorView> {
        factors
            .into_iter()
            .filter(|factor| self.otp && self.states.contains(&factor.state))
            .collect()
    }
}

/// The organization and user of a scope, once the scope is spent on an operation.
struct Target {
    org: Arc<str>,
    user: Arc<str>,
    actor: Arc<Author>,
}

impl From<OwnScope> for Target {
    fn from(OwnScope { org, user, actor }: OwnScope) -> Self {
        Self { org, user, actor }
    }
}

impl From<UserScope> for Target {
    fn from(scope: UserScope) -> Self {
        match scope {
            UserScope::Own(own) => own.into(),
            UserScope::Admin(admin) => admin.into(),
        }
    }
}

impl<R: Role> From<OrgScope<R>> for Target {
    fn from(scope: OrgScope<R>) -> Self {
        Self {
            org: scope.org,
            user: scope.user,
            actor: scope.actor,
        }
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
