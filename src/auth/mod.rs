//! Bearer tokens and tenants: who is calling, for which organization, with which roles.

mod caller;
mod dev;
mod jwks;
mod settings;
mod verifier;

pub use caller::{Caller, org_header, user_id};
pub use dev::{DEV_KEY_ID, mint_dev_token};
pub use settings::{AuthConfig, AuthSettings, ClaimNames};
pub use verifier::{TokenVerifier, VerifierError};
