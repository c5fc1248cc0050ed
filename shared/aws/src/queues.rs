//! The dead-letter queue of calls that cannot be delivered (SQS).

use aws_sdk_sqs::Client;
use sluice_core::BackendError;

pub struct DeadLetterQueue {
    client: Client,
    url: String,
}

impl DeadLetterQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        DeadLetterQueue {
            client,
            url: url.into(),
        }
    }

    /// Puts one letter (JSON) on the queue.
    pub async fn send(&self, letter: &serde_json::Value) -> Result<(), BackendError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(letter.to_string())
            .send()
            .await
            .map_err(crate::aws_error)?;
        Ok(())
    }
}
