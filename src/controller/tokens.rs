//! Which DigitalOcean token a DropletAction uses: the Secret its spec names (in its own namespace only), or
//! the operator's default token. Tokens are read on demand and never logged or written anywhere.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::DropletActionSpec;
use crate::digitalocean::Token;

/// The outcome of looking up a token.
pub enum TokenLookup {
    /// A token to use.
    Found(Token),
    /// No token: the text tells the user what to create (it never contains a token).
    Missing(String),
}

/// Reads the token for a DropletAction in `namespace`.
pub async fn lookup(
    client: &kube::Client,
    namespace: &str,
    spec: &DropletActionSpec,
    default: Option<&Token>,
) -> Result<TokenLookup, kube::Error> {
    let Some(reference) = &spec.token_secret_ref else {
        return Ok(match default {
            Some(t) => TokenLookup::Found(t.clone()),
            None => TokenLookup::Missing(
                "no spec.tokenSecretRef and the operator has no default token: set spec.tokenSecretRef to a Secret \
                 holding a DigitalOcean token, or start the operator with DIGITALOCEAN_TOKEN or --token-file"
                    .into(),
            ),
        });
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&reference.name).await {
        Ok(s) => s,
        // RBAC: in the namespaced or opt-in set-ups the operator may only read Secrets where it was allowed to.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(TokenLookup::Missing(format!(
                "the operator is not allowed to read Secret {namespace}/{} named by spec.tokenSecretRef: grant it get on \
                 secrets in namespace {namespace} (bind the ClusterRole droplet-operator-token-reader there)",
                reference.name
            )));
        }
        Err(e) => return Err(e),
    };
    let Some(secret) = secret else {
        return Ok(TokenLookup::Missing(format!(
            "Secret {namespace}/{} named by spec.tokenSecretRef was not found: create it with the DigitalOcean token under key {:?}",
            reference.name, reference.key
        )));
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|s| s.trim().to_string());
    match from_data.or(from_string).filter(|t| !t.is_empty()) {
        Some(t) => Ok(TokenLookup::Found(Token::new(t))),
        None => Ok(TokenLookup::Missing(format!(
            "Secret {namespace}/{} has no non-empty key {:?} (spec.tokenSecretRef.key)",
            reference.name, reference.key
        ))),
    }
}
