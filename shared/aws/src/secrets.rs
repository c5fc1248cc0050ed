//! Secrets from Secrets Manager (connections, write keys), cached in a warm container
//! for a few minutes (a rotated password is picked up after at most `ttl`); and
//! written when the API creates a source with its connection or write key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use sluice_core::{SecretWriter, Secrets, SecretsError};
use tokio::sync::Mutex;

pub struct SecretsManagerSecrets {
    client: Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, serde_json::Value)>>,
}

impl SecretsManagerSecrets {
    pub fn new(client: Client, ttl: Duration) -> Self {
        SecretsManagerSecrets {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Secrets for SecretsManagerSecrets {
    async fn value(&self, secret_id: &str) -> Result<serde_json::Value, SecretsError> {
        if let Some((at, secret)) = self.cache.lock().await.get(secret_id)
            && at.elapsed() < self.ttl
        {
            return Ok(secret.clone());
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                {
                    SecretsError::NotFound {
                        id: secret_id.to_string(),
                    }
                } else {
                    SecretsError::Backend {
                        id: secret_id.to_string(),
                        source: crate::aws_error(e),
                    }
                }
            })?;
        let text = out.secret_string().ok_or_else(|| SecretsError::Malformed {
            id: secret_id.to_string(),
            reason: "it holds binary data; store the secret's JSON as the secret string".into(),
        })?;
        // serde_json's messages name the position, never the text.
        let secret: serde_json::Value = serde_json::from_str(text).map_err(|e| SecretsError::Malformed {
            id: secret_id.to_string(),
            reason: format!("it is not JSON: {e}"),
        })?;
        self.cache
            .lock()
            .await
            .insert(secret_id.to_string(), (Instant::now(), secret.clone()));
        Ok(secret)
    }
}

fn backend<E, R>(secret_id: &str) -> impl FnOnce(aws_sdk_secretsmanager::error::SdkError<E, R>) -> SecretsError
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| SecretsError::Backend {
        id: secret_id.to_string(),
        source: crate::aws_error(e),
    }
}

#[async_trait]
impl SecretWriter for SecretsManagerSecrets {
    async fn put(&self, secret_id: &str, value: &serde_json::Value) -> Result<(), SecretsError> {
        let value = value.to_string();
        let put_value = || {
            self.client
                .put_secret_value()
                .secret_id(secret_id)
                .secret_string(&value)
                .send()
        };
        match put_value().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                let create = self
                    .client
                    .create_secret()
                    .name(secret_id)
                    .description("Sluice secret: a connection (DESIGN §5) or a destination's write key")
                    .secret_string(&value)
                    .send()
                    .await;
                match create {
                    Ok(_) => {}
                    // A request racing this one created it (the SDK's own retries
                    // of a create are idempotent by their request token): the secret
                    // is there, so its value is set.
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => {
                        put_value().await.map_err(backend(secret_id))?;
                    }
                    Err(e) => return Err(backend(secret_id)(e)),
                }
            }
            Err(e) => return Err(backend(secret_id)(e)),
        }
        self.cache.lock().await.remove(secret_id);
        Ok(())
    }

    async fn create(&self, secret_id: &str, value: &serde_json::Value) -> Result<bool, SecretsError> {
        self.cache.lock().await.remove(secret_id);
        let created = self
            .client
            .create_secret()
            .name(secret_id)
            .description("Sluice secret: a connection (DESIGN §5) or a destination's write key")
            .secret_string(value.to_string())
            .send()
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => Ok(false),
            Err(e) => Err(backend(secret_id)(e)),
        }
    }

    async fn delete(&self, secret_id: &str) -> Result<(), SecretsError> {
        self.cache.lock().await.remove(secret_id);
        match self
            .client
            .delete_secret()
            .secret_id(secret_id)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend(secret_id)(e)),
        }
    }
}
