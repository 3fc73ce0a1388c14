//! The HTTP client that talks to identity providers: rustls on aws-lc-rs
//! (reqwest), no redirects followed, a deadline on every call, and answers
//! read up to a bound.

use std::time::Duration;

use serde_json::Value;

use super::FlowError;

/// The largest answer read from a provider (discovery, JWKS, token, userinfo).
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("authgw/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the identity providers' HTTP client: {e}"))?;
        Ok(Self { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `req` and reads its JSON answer (at most [`MAX_BODY`] bytes).
    /// A non-2xx answer is an error carrying the provider's `error` field
    /// when it has one; `fail` makes the error of the step.
    pub async fn json(
        &self,
        req: reqwest::RequestBuilder,
        fail: fn(String) -> FlowError,
    ) -> Result<Value, FlowError> {
        let mut response = req
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(crate::error::with_causes(&e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(crate::error::with_causes(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(fail(format!("the answer is larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&body).map_err(|_| {
            fail(format!(
                "HTTP {status}: the answer is not JSON ({} bytes)",
                body.len()
            ))
        })?;
        if !status.is_success() {
            let error = value["error"].as_str().unwrap_or("no error code");
            return Err(fail(format!("HTTP {status}: {error}")));
        }
        Ok(value)
    }
}
