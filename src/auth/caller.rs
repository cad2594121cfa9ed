use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::OtpError;

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

    /// The organization a management call acts in: the `x-zitadel-orgid` header when present,
    /// else the caller's own; the caller must hold `role` for it.
    pub fn management_org(
        &self,
        header_org: Option<&str>,
        role: &str,
    ) -> Result<Arc<str>, OtpError> {
        let org: Arc<str> = match header_org.map(str::trim).filter(|org| !org.is_empty()) {
            Some(org) => Arc::from(org),
            None => self.org.clone(),
        };
        if self.has_role_for(role, &org) {
            Ok(org)
        } else {
            Err(OtpError::PermissionDenied)
        }
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
            c.management_org(None, "otp.check").unwrap().as_ref(),
            "org-a"
        );
        assert_eq!(
            c.management_org(Some("org-a"), "otp.check")
                .unwrap()
                .as_ref(),
            "org-a"
        );
        assert_eq!(
            c.management_org(Some("org-b"), "otp.check"),
            Err(OtpError::PermissionDenied)
        );
        assert_eq!(
            c.management_org(None, "otp.admin"),
            Err(OtpError::PermissionDenied)
        );
    }
}
