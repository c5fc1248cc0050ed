//! SSH tunnels (DESIGN §5): log in to the bastion with the secret's key, check its host
//! key against the pinned one (the secret's, or the one recorded on first contact; with
//! neither, trust on first use as ssh does), and forward a local loopback port to the
//! database through `direct-tcpip` channels. The tunnel lives as long as the session
//! that uses it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate, decode_secret_key};
use sluice_core::{RenderedQuery, SourceError, SourceErrorKind, SourceSession, SshTunnel};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::CONNECT_TIMEOUT;

/// A running tunnel: connections to `local` reach the database. Dropping it closes it.
pub struct Tunnel {
    pub local: SocketAddr,
    /// The bastion's host key, as an OpenSSH line.
    pub host_key: String,
    forwarding: JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.forwarding.abort();
    }
}

/// Checks the server's host key against the pinned one (any key when none is), and
/// remembers what the server showed.
struct HostKeyCheck {
    expected: Option<PublicKey>,
    shown: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match server {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone().into(),
        };
        let trusted = self.expected.as_ref().is_none_or(|e| key.key_data() == e.key_data());
        *self.shown.lock().expect("not poisoned") = Some(key);
        Ok(trusted)
    }
}

fn error(kind: SourceErrorKind, message: impl Into<String>) -> SourceError {
    SourceError::new(kind, message)
}

/// Opens a tunnel through `t` to `target_host:target_port` (as the bastion resolves it).
pub async fn open(t: &SshTunnel, target_host: &str, target_port: u16) -> Result<Tunnel, SourceError> {
    let bastion = format!("{}:{}", t.host, t.port);
    let expected = t
        .host_key
        .as_deref()
        .map(|line| {
            PublicKey::from_openssh(line.trim()).map_err(|e| {
                error(
                    SourceErrorKind::Config,
                    format!("ssh_tunnel.host_key is not an OpenSSH public key line (like `ssh-ed25519 AAAA...`): {e}"),
                )
            })
        })
        .transpose()?;
    let pinned = expected.as_ref().map(openssh_line).unwrap_or_default();
    let key = decode_secret_key(&t.private_key, t.passphrase.as_deref()).map_err(|e| {
        error(
            SourceErrorKind::Config,
            format!(
                "ssh_tunnel.private_key cannot be read ({e}); give an unencrypted RSA key in PEM format or an RSA, ed25519 or ECDSA key in OpenSSH format, or its passphrase"
            ),
        )
    })?;
    let shown = Arc::new(Mutex::new(None));
    let handler = HostKeyCheck {
        expected,
        shown: shown.clone(),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        ..client::Config::default()
    });
    let connecting = client::connect(config, (t.host.as_str(), t.port), handler);
    let mut session = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(error(
                SourceErrorKind::Connect,
                format!(
                    "the SSH bastion {bastion} did not answer within {}s; check ssh_tunnel.host and port, and that it accepts connections from Sluice",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(russh::Error::UnknownKey)) => {
            let line = shown_line(&shown);
            return Err(error(
                SourceErrorKind::Tls,
                format!(
                    "the SSH bastion {bastion} showed the host key {line}, but the source is pinned to {pinned} (the secret's ssh_tunnel.host_key, or the key recorded on first contact), so the tunnel was refused: a different server, or its key changed. If the key changed on purpose, set ssh_tunnel.host_key in the secret to the new key"
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err(error(
                SourceErrorKind::Connect,
                format!("cannot reach the SSH bastion {bastion}: {e}; check ssh_tunnel.host and port"),
            ));
        }
        Ok(Ok(session)) => session,
    };
    let hash = session.best_supported_rsa_hash().await.ok().flatten().flatten();
    let auth = session
        .authenticate_publickey(&t.username, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| error(SourceErrorKind::Connect, format!("SSH login to {bastion} failed: {e}")))?;
    if !auth.success() {
        return Err(error(
            SourceErrorKind::Auth,
            format!(
                "the SSH bastion {bastion} refused the key for user {}: add the key's public half to that user's authorized_keys, or fix ssh_tunnel.username",
                t.username
            ),
        ));
    }
    // One channel now, so that a bastion that may not forward to the database says so
    // here rather than as a reset connection later.
    let probe = session
        .channel_open_direct_tcpip(target_host, target_port.into(), "127.0.0.1", 0)
        .await
        .map_err(|e| {
            error(
                SourceErrorKind::Connect,
                format!(
                    "the SSH bastion {bastion} refused to forward to {target_host}:{target_port} ({e}); allow it (AllowTcpForwarding, PermitOpen) or fix the secret's host and port, which the bastion resolves"
                ),
            )
        })?;
    drop(probe);
    let host_key = shown_line(&shown);
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
        error(
            SourceErrorKind::Connect,
            format!("cannot open a local port for the SSH tunnel: {e}"),
        )
    })?;
    let local = listener.local_addr().expect("bound");
    let session = Arc::new(session);
    let target_host = target_host.to_string();
    let forwarding = tokio::spawn(forward(listener, session, target_host, target_port));
    debug!(%bastion, %local, "SSH tunnel open");
    Ok(Tunnel {
        local,
        host_key,
        forwarding,
    })
}

/// The key the server showed, as one OpenSSH line.
fn shown_line(shown: &Mutex<Option<PublicKey>>) -> String {
    shown
        .lock()
        .expect("not poisoned")
        .as_ref()
        .map(openssh_line)
        .unwrap_or_default()
}

/// A key as one OpenSSH line, without a comment.
fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh().unwrap_or_default()
}

/// Carries each local connection through its own channel.
async fn forward(listener: TcpListener, session: Arc<Handle<HostKeyCheck>>, host: String, port: u16) {
    while let Ok((mut local, peer)) = listener.accept().await {
        let session = session.clone();
        let host = host.clone();
        tokio::spawn(async move {
            match session
                .channel_open_direct_tcpip(host.as_str(), port.into(), "127.0.0.1", peer.port().into())
                .await
            {
                Ok(channel) => {
                    let mut remote = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                Err(e) => warn!(error = %e, "the SSH bastion refused a forwarded connection"),
            }
        });
    }
}

/// A session whose connection runs through an SSH tunnel, which it keeps open.
pub(crate) struct Tunneled {
    session: Box<dyn SourceSession>,
    tunnel: Tunnel,
}

impl Tunneled {
    pub(crate) fn new(session: Box<dyn SourceSession>, tunnel: Tunnel) -> Self {
        Tunneled { session, tunnel }
    }
}

#[async_trait::async_trait]
impl SourceSession for Tunneled {
    async fn now(&mut self) -> Result<chrono::DateTime<chrono::Utc>, SourceError> {
        self.session.now().await
    }

    async fn open_transactions(&mut self) -> Result<sluice_core::OpenTransactions, SourceError> {
        self.session.open_transactions().await
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        self.session.columns(query).await
    }

    fn stream<'a>(
        &'a mut self,
        query: &'a RenderedQuery,
    ) -> futures::stream::BoxStream<'a, Result<sluice_core::Row, SourceError>> {
        self.session.stream(query)
    }

    async fn finish(&mut self) -> Result<(), SourceError> {
        self.session.finish().await
    }

    fn ssh_host_key(&self) -> Option<&str> {
        Some(&self.tunnel.host_key)
    }

    async fn login_check(&mut self) -> sluice_core::LoginCheck {
        self.session.login_check().await
    }
}
