//! Bearer tokens and tenants: who is calling, for which organization, with which roles.

mod caller;
mod dev;
mod discovery;
mod introspection;
mod jwks;
mod refusal;
mod settings;
mod verifier;

pub use caller::{Caller, org_header, user_id};
pub use dev::{DEV_KEY_ID, Signer, TokenClaims, generate_signing_key, mint_dev_token};
pub use settings::{
    AuthConfig, AuthSettings, ClaimNames, IntrospectionClient, IntrospectionConfig,
};
pub use verifier::{TokenVerifier, VerifierError};
