//! OpenID Provider discovery (OpenID Connect Discovery 1.0): where the provider publishes its
//! keys and its introspection endpoint, read once at start from the issuer's URL.

use serde::Deserialize;

use super::verifier::VerifierError;

#[derive(Debug, Deserialize)]
pub(crate) struct ProviderMetadata {
    issuer: String,
    pub jwks_uri: Option<String>,
    pub introspection_endpoint: Option<String>,
}

/// The metadata at `{issuer}/.well-known/openid-configuration`. Its `issuer` must be the
/// configured one exactly (section 4.3), so that a document served elsewhere cannot name
/// other keys.
pub(crate) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<ProviderMetadata, VerifierError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let failed = |why: String| VerifierError::Discovery(url.clone(), why);
    let metadata: ProviderMetadata = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(e.without_url().to_string()))?
        .json()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    if metadata.issuer != issuer {
        return Err(failed(format!(
            "it names issuer {:?}, auth.issuer is {issuer:?}",
            metadata.issuer
        )));
    }
    Ok(metadata)
}
