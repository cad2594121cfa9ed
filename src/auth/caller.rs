use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::settings::ClaimNames;
use crate::domain::OtpError;
use crate::domain::ids::is_valid_id;

/// The authenticated caller, proven by a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<str>,
    /// The user's own organization (the resource owner of the `me` calls).
    pub org: Arc<str>,
    /// Shown as the account in the otpauth URI.
    pub login_name: Option<String>,
    /// role -> the organizations it counts for (ZITADEL's `{"role": {"orgId": "domain"}}`).
    pub roles: HashMap<String, HashSet<String>>,
}

impl Caller {
    pub fn has_role_for(&self, role: &str, org: &str) -> bool {
        self.roles.get(role).is_some_and(|orgs| orgs.contains(org))
    }

    /// The organization a management call acts in: the `x-zitadel-orgid` header when present
    /// (see `org_header`), else the caller's own; the caller must hold one of `roles` for it.
    pub fn management_org(
        &self,
        header_org: Option<Arc<str>>,
        roles: &[&str],
    ) -> Result<Arc<str>, OtpError> {
        let org = header_org.unwrap_or_else(|| self.org.clone());
        if roles.iter().any(|role| self.has_role_for(role, &org)) {
            Ok(org)
        } else {
            Err(OtpError::PermissionDenied)
        }
    }
}

impl ClaimNames {
    /// The caller named by a token's claims, whether from a verified JWT or from an
    /// introspection response: subject and organization must be ids; roles map to the
    /// organizations they count for (ZITADEL's shape), anything else there is ignored.
    pub(crate) fn caller(&self, claims: &Map<String, Value>) -> Option<Caller> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let user = text(&self.user).filter(|id| is_valid_id(id))?;
        let org = text(&self.org).filter(|id| is_valid_id(id))?;
        let login_name = text(&self.login_name).map(str::to_owned);
        let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
        if let Some(Value::Object(granted)) = claims.get(&self.roles) {
            for (role, orgs) in granted {
                if let Value::Object(orgs) = orgs {
                    roles.insert(role.clone(), orgs.keys().cloned().collect());
                }
            }
        }
        Some(Caller {
            user: Arc::from(user),
            org: Arc::from(org),
            login_name,
            roles,
        })
    }
}

/// The `x-zitadel-orgid` header as the management calls take it: absent or blank, none; else
/// a valid organization id. A header that is not (UTF-8 without control characters, at most
/// 200 bytes) is refused: falling back to the caller's own organization would act where the
/// caller did not ask.
pub fn org_header(raw: Option<&[u8]>) -> Result<Option<Arc<str>>, OtpError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).map_err(|_| OtpError::MalformedOrgHeader)?;
    match text.trim() {
        "" => Ok(None),
        org if is_valid_id(org) => Ok(Some(Arc::from(org))),
        _ => Err(OtpError::MalformedOrgHeader),
    }
}

/// A user id from a path or a request message.
pub fn user_id(raw: &str) -> Result<Arc<str>, OtpError> {
    if is_valid_id(raw) {
        Ok(Arc::from(raw))
    } else {
        Err(OtpError::MalformedUserId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        let mut roles = HashMap::new();
        roles.insert("otp.check".to_owned(), HashSet::from(["org-a".to_owned()]));
        Caller {
            user: Arc::from("u1"),
            org: Arc::from("org-a"),
            login_name: None,
            roles,
        }
    }

    #[test]
    fn roles_count_only_for_their_organizations() {
        let c = caller();
        assert_eq!(
            c.management_org(None, &["otp.check"]).unwrap().as_ref(),
            "org-a"
        );
        assert_eq!(
            c.management_org(Some(Arc::from("org-a")), &["otp.check"])
                .unwrap()
                .as_ref(),
            "org-a"
        );
        assert_eq!(
            c.management_org(Some(Arc::from("org-b")), &["otp.check"]),
            Err(OtpError::PermissionDenied)
        );
        assert_eq!(
            c.management_org(None, &["otp.admin"]),
            Err(OtpError::PermissionDenied)
        );
        assert_eq!(
            c.management_org(None, &["otp.admin", "otp.check"])
                .unwrap()
                .as_ref(),
            "org-a",
            "any one of the roles"
        );
    }

    #[test]
    fn org_headers_are_ids_or_nothing() {
        assert_eq!(org_header(None), Ok(None));
        assert_eq!(org_header(Some(b"  ")), Ok(None));
        assert_eq!(org_header(Some(b" 42 ")), Ok(Some(Arc::from("42"))));
        for bad in [&b"glob\xe9x"[..], b"a\tb", &[b'7'; 201]] {
            assert_eq!(org_header(Some(bad)), Err(OtpError::MalformedOrgHeader));
        }
        assert_eq!(user_id(""), Err(OtpError::MalformedUserId));
    }
}
