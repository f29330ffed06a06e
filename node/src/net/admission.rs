//! Admission: the proof that a peer knows the cluster secret.
//!
//! Role: derive, from the cluster secret, the pre-shared key that TCP's pnet layer uses and the
//! key of the "hello" challenge that every connection (QUIC included) must pass before any
//! state protocol (gossip, sync) is served to the peer. Owns no state: pure functions and the
//! wire types of the `/shoal/hello/1` request-response protocol. Used by the network task.
//!
//! The hello exchange: each side sends the other a random 32-byte nonce; the answer is
//! `HMAC-SHA256(k_hello, "shoal/hello/1" | challenger | prover | nonce | prover's node name)`,
//! where `k_hello` is derived from the cluster secret with HKDF and peer ids are those that
//! Noise or TLS authenticated. Binding both peer ids stops a peer without the secret from
//! relaying one member's challenge to another member.

use hkdf::Hkdf;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Protocol name of the admission check.
pub(crate) const HELLO_PROTOCOL: &str = "/shoal/hello/1";

/// Longest node name accepted in a hello answer, in bytes.
pub(crate) const MAX_NODE_NAME: usize = 253;

/// A challenge: prove that you know the cluster secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelloRequest {
    pub nonce: [u8; 32],
}

/// The answer to a [`HelloRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelloResponse {
    /// The prover's node name, covered by `mac`.
    pub node_name: String,
    #[serde(with = "super::wire::bytes")]
    pub mac: Vec<u8>,
}

/// Keys derived from the cluster secret.
#[derive(Clone)]
pub(crate) struct ClusterKeys {
    /// Pre-shared key of the TCP private network (libp2p pnet).
    pub psk: [u8; 32],
    /// Key of the hello HMAC.
    pub hello: [u8; 32],
    /// The token that opens every sync message (see [`super::wire`]): a peer without it
    /// cannot make this node read more of a sync stream than the token's length.
    pub sync_token: [u8; 32],
}

impl ClusterKeys {
    /// Derives the keys with HKDF-SHA256; the cluster id is the salt, so two clusters that
    /// happened to share a secret would still not admit each other.
    pub fn derive(cluster_id: &str, secret: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(cluster_id.as_bytes()), secret);
        let mut psk = [0u8; 32];
        let mut hello = [0u8; 32];
        let mut sync_token = [0u8; 32];
        // `expand` only fails for outputs longer than 255 * 32 bytes.
        let _ = hk.expand(b"shoal pnet psk v1", &mut psk);
        let _ = hk.expand(b"shoal hello hmac v1", &mut hello);
        let _ = hk.expand(b"shoal sync token v1", &mut sync_token);
        Self {
            psk,
            hello,
            sync_token,
        }
    }
}

fn mac(
    key: &[u8; 32],
    challenger: &PeerId,
    prover: &PeerId,
    nonce: &[u8; 32],
    name: &str,
) -> Hmac<Sha256> {
    // HMAC pads a short key with zeros to the hash's block size (64 bytes for SHA-256);
    // doing it here lets us use the infallible constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(HELLO_PROTOCOL.as_bytes());
    for id in [challenger.to_bytes(), prover.to_bytes()] {
        mac.update(&(id.len() as u32).to_be_bytes());
        mac.update(&id);
    }
    mac.update(nonce);
    mac.update(&(name.len() as u32).to_be_bytes());
    mac.update(name.as_bytes());
    mac
}

/// The proof that `prover` knows the secret, for `challenger`'s `nonce`.
pub(crate) fn prove(
    key: &[u8; 32],
    challenger: &PeerId,
    prover: &PeerId,
    nonce: &[u8; 32],
    name: &str,
) -> Vec<u8> {
    mac(key, challenger, prover, nonce, name)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Checks a proof in constant time.
pub(crate) fn verify(
    key: &[u8; 32],
    challenger: &PeerId,
    prover: &PeerId,
    nonce: &[u8; 32],
    name: &str,
    proof: &[u8],
) -> bool {
    mac(key, challenger, prover, nonce, name)
        .verify_slice(proof)
        .is_ok()
}

/// A fresh random nonce.
pub(crate) fn nonce() -> Result<[u8; 32], getrandom::Error> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_checks_secret_peers_nonce_and_name() {
        let keys = ClusterKeys::derive("c1", &[7; 32]);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let n = [1; 32];
        let p = prove(&keys.hello, &a, &b, &n, "node-b");
        assert!(verify(&keys.hello, &a, &b, &n, "node-b", &p));

        let other_secret = ClusterKeys::derive("c1", &[8; 32]);
        let other_cluster = ClusterKeys::derive("c2", &[7; 32]);
        assert!(!verify(&other_secret.hello, &a, &b, &n, "node-b", &p));
        assert!(!verify(&other_cluster.hello, &a, &b, &n, "node-b", &p));
        assert!(
            !verify(&keys.hello, &c, &b, &n, "node-b", &p),
            "relayed to another challenger"
        );
        assert!(
            !verify(&keys.hello, &b, &a, &n, "node-b", &p),
            "roles swapped"
        );
        assert!(
            !verify(&keys.hello, &a, &b, &[2; 32], "node-b", &p),
            "other nonce"
        );
        assert!(!verify(&keys.hello, &a, &b, &n, "node-x", &p), "other name");
        assert!(
            !verify(&keys.hello, &a, &b, &n, "node-b", &p[..16]),
            "truncated"
        );
    }

    #[test]
    fn derived_keys_differ() {
        let k = ClusterKeys::derive("c1", &[7; 32]);
        assert_ne!(k.psk, k.hello);
        assert_ne!(k.sync_token, k.hello);
        assert_ne!(k.sync_token, k.psk);
        assert_ne!(k.psk, [7; 32]);
    }
}
