//! Signed, expiring links to a user's media.
//!
//! A `<video>` or `<img>` element cannot send an `Authorization` header, so
//! media URLs carry their own proof: `exp` (unix seconds) and `sig`, an
//! HMAC-SHA256 with a server secret over the file, the owner's user id and
//! `exp`. The owner is not in the URL: the server looks up the import's
//! owner when the link is used and checks the signature against it, so a
//! link minted for one user never opens another user's file, and deleting
//! an import revokes its links at once.
//!
//! A link is a short-lived capability: whoever holds it can fetch the file
//! until it expires. Mint links only for the caller's own imports, and keep
//! the lifetime short (minutes to hours); the API mints fresh ones whenever
//! it returns an import, so they are never stored.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Name of the secret kept in the data dir when `REELTIME_MEDIA_SECRET` is unset.
pub const SECRET_FILE: &str = "media-secret";

/// Shortest secret accepted: 32 bytes, the HMAC-SHA256 key size.
pub const MIN_SECRET_LEN: usize = 32;

/// Separates the signed fields; also names the scheme so a signature made
/// for anything else with the same secret never passes here.
const DOMAIN: &str = "reeltime-media-v1";

/// Why a media link was refused. Every case is a 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this media link is not signed")]
    Missing,
    #[error("this media link is not valid")]
    Invalid,
    #[error("this media link has expired; reload the page for a fresh one")]
    Expired,
}

impl LinkError {
    /// Stable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::Missing => "link_missing",
            LinkError::Invalid => "link_invalid",
            LinkError::Expired => "link_expired",
        }
    }
}

/// Signs and checks media links with the server's secret.
pub struct MediaSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for MediaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaSigner { .. }") // never print the key
    }
}

impl MediaSigner {
    /// Uses `REELTIME_MEDIA_SECRET` when set; otherwise the secret kept in
    /// `<data_dir>/media-secret` (mode 0600), made from 32 random bytes on
    /// first start. Keeping it means links handed out before a restart
    /// still work after it; several nodes share links by sharing the
    /// setting.
    pub fn load_or_create(
        data_dir: &Path,
        secret_from_setting: Option<String>,
    ) -> anyhow::Result<MediaSigner> {
        let secret = match secret_from_setting {
            Some(secret) => {
                anyhow::ensure!(
                    secret.len() >= MIN_SECRET_LEN,
                    "bad setting REELTIME_MEDIA_SECRET: use at least {MIN_SECRET_LEN} characters (for example `openssl rand -hex 32`)"
                );
                secret.into_bytes()
            }
            None => load_or_create_secret(&data_dir.join(SECRET_FILE))?,
        };
        Ok(MediaSigner::from_secret(&secret))
    }

    /// A signer over `secret` as it is (tests, or a secret from elsewhere).
    pub fn from_secret(secret: &[u8]) -> MediaSigner {
        MediaSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The URL path of `<media dir>/<import_id>/<file>` for `owner`, valid
    /// for `ttl`: `/media/<import_id>/<file>?exp=<unix>&sig=<base64url>`.
    pub fn sign(&self, import_id: &str, file: &str, owner: &str, ttl: Duration) -> String {
        self.sign_until(
            import_id,
            file,
            owner,
            unix_now().saturating_add(ttl.as_secs()),
        )
    }

    /// As [`MediaSigner::sign`], expiring at `expires_at` (unix seconds).
    pub fn sign_until(&self, import_id: &str, file: &str, owner: &str, expires_at: u64) -> String {
        let tag = hmac::sign(&self.key, &message(import_id, file, owner, expires_at));
        format!(
            "/media/{}/{}?exp={expires_at}&sig={}",
            encode_segment(import_id),
            encode_segment(file),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// Checks the query string (`exp=...&sig=...`) of a request for
    /// `<import_id>/<file>` against the import's actual `owner`.
    pub fn verify(
        &self,
        import_id: &str,
        file: &str,
        owner: &str,
        query: Option<&str>,
    ) -> Result<(), LinkError> {
        self.verify_at(import_id, file, owner, query, unix_now())
    }

    /// As [`MediaSigner::verify`] at the time `now` (unix seconds).
    pub fn verify_at(
        &self,
        import_id: &str,
        file: &str,
        owner: &str,
        query: Option<&str>,
        now: u64,
    ) -> Result<(), LinkError> {
        let (exp, sig) = link_params(query.unwrap_or_default())?;
        let expires_at: u64 = exp.parse().map_err(|_| LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(sig.as_bytes())
            .map_err(|_| LinkError::Invalid)?;
        // Constant-time comparison inside aws-lc.
        hmac::verify(
            &self.key,
            &message(import_id, file, owner, expires_at),
            &tag,
        )
        .map_err(|_| LinkError::Invalid)?;
        if expires_at < now {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// `exp` and `sig` from a query string; a repeated one is refused rather
/// than guessed at.
fn link_params(query: &str) -> Result<(String, String), LinkError> {
    let mut exp = None;
    let mut sig = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "exp" => &mut exp,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(LinkError::Invalid);
        }
    }
    match (exp, sig) {
        (Some(exp), Some(sig)) => Ok((exp, sig)),
        (None, None) => Err(LinkError::Missing),
        _ => Err(LinkError::Invalid),
    }
}

/// The signed bytes. The handler only accepts import ids and file names
/// without a newline (see [`super::serve::is_safe_component`]) and `exp` is
/// digits at the end, so no field can be shifted into another, whatever the
/// user id holds.
fn message(import_id: &str, file: &str, owner: &str, expires_at: u64) -> Vec<u8> {
    format!("{DOMAIN}\n{import_id}/{file}\n{owner}\n{expires_at}").into_bytes()
}

/// Percent-encodes a path segment (ids and file names are plain ASCII in
/// practice; this keeps anything else from breaking the URL).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

/// Reads the kept secret, or makes one. A new secret is written to a
/// temporary file and hard-linked into place, so two processes starting at
/// once agree on one secret and no one ever reads a half-written file.
fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match read_secret(path) {
        Ok(secret) => return Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random)
        .map_err(|_| anyhow::anyhow!("could not generate a media secret"))?;
    let secret = hex(&random);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = dir.join(format!("{SECRET_FILE}.{}.tmp", &secret[..16]));
    crate::private_file::write_private(&temp, &format!("{secret}\n"))
        .with_context(|| format!("writing {}", temp.display()))?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a media link secret");
            Ok(secret.into_bytes())
        }
        // Another process made it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("writing {}", path.display())),
    }
}

fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let secret = std::fs::read_to_string(path)?.trim().to_string();
    if secret.len() < MIN_SECRET_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the media secret is shorter than {MIN_SECRET_LEN} characters; delete the file to make a new one"
            ),
        ));
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the media secret was readable by others; making it private");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(secret.into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn signer() -> MediaSigner {
        MediaSigner::from_secret(b"0123456789abcdef0123456789abcdef")
    }

    /// The query string of a signed link.
    fn query(link: &str) -> &str {
        link.split_once('?').map(|(_, query)| query).unwrap_or("")
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let link = signer().sign_until("imp1", "video.mp4", "alice", NOW + 60);
        assert!(link.starts_with("/media/imp1/video.mp4?exp=1700000060&sig="));
        let q = Some(query(&link));
        assert_eq!(
            signer().verify_at("imp1", "video.mp4", "alice", q, NOW),
            Ok(())
        );
        assert_eq!(
            signer().verify_at("imp1", "video.mp4", "alice", q, NOW + 60),
            Ok(())
        );
        assert_eq!(
            signer().verify_at("imp1", "video.mp4", "alice", q, NOW + 61),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn sign_uses_the_clock() {
        let link = signer().sign("imp1", "poster.jpg", "alice", Duration::from_secs(600));
        assert_eq!(
            signer().verify("imp1", "poster.jpg", "alice", Some(query(&link))),
            Ok(())
        );
    }

    #[test]
    fn another_users_import_is_refused() {
        // Alice's link checked against the owner of the import, Bob.
        let link = signer().sign_until("imp1", "video.mp4", "alice", NOW + 60);
        assert_eq!(
            signer().verify_at("imp1", "video.mp4", "bob", Some(query(&link)), NOW),
            Err(LinkError::Invalid)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let link = signer().sign_until("imp1", "video.mp4", "alice", NOW + 60);
        let q = query(&link);
        let check = |import: &str, file: &str, q: &str| {
            signer().verify_at(import, file, "alice", Some(q), NOW)
        };
        assert_eq!(
            check("imp2", "video.mp4", q),
            Err(LinkError::Invalid),
            "other import"
        );
        assert_eq!(
            check("imp1", "source.mkv", q),
            Err(LinkError::Invalid),
            "other file"
        );
        let later = q.replace("exp=1700000060", "exp=1800000000");
        assert_eq!(
            check("imp1", "video.mp4", &later),
            Err(LinkError::Invalid),
            "exp moved"
        );
        let (head, sig) = q.split_once("sig=").unwrap();
        let mut flipped: Vec<u8> = sig.bytes().collect();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{head}sig={}", String::from_utf8(flipped).unwrap());
        assert_eq!(
            check("imp1", "video.mp4", &flipped),
            Err(LinkError::Invalid),
            "sig flipped"
        );
        let other_key = MediaSigner::from_secret(b"another secret of thirty-two byte");
        assert_eq!(
            other_key.verify_at("imp1", "video.mp4", "alice", Some(q), NOW),
            Err(LinkError::Invalid),
            "other secret"
        );
    }

    #[test]
    fn missing_or_malformed_parameters_are_refused() {
        let check = |q: Option<&str>| signer().verify_at("imp1", "video.mp4", "alice", q, NOW);
        assert_eq!(check(None), Err(LinkError::Missing));
        assert_eq!(check(Some("")), Err(LinkError::Missing));
        assert_eq!(check(Some("exp=1700000060")), Err(LinkError::Invalid));
        assert_eq!(check(Some("sig=abc")), Err(LinkError::Invalid));
        assert_eq!(check(Some("exp=soon&sig=abc")), Err(LinkError::Invalid));
        assert_eq!(
            check(Some("exp=1700000060&sig=%%%")),
            Err(LinkError::Invalid)
        );
        let link = signer().sign_until("imp1", "video.mp4", "alice", NOW + 60);
        let doubled = format!("{}&exp=1", query(&link));
        assert_eq!(
            check(Some(&doubled)),
            Err(LinkError::Invalid),
            "repeated exp"
        );
    }

    #[test]
    fn odd_characters_are_encoded_in_the_url() {
        assert_eq!(encode_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(encode_segment("video.mp4"), "video.mp4");
    }

    #[test]
    fn the_secret_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = MediaSigner::load_or_create(dir.path(), None).unwrap();
        let path = dir.path().join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MediaSigner::load_or_create(dir.path(), None).unwrap();
        let link = first.sign_until("imp1", "video.mp4", "alice", NOW + 60);
        assert_eq!(
            second.verify_at("imp1", "video.mp4", "alice", Some(query(&link)), NOW),
            Ok(()),
            "a restart keeps the secret"
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn the_setting_wins_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s".repeat(MIN_SECRET_LEN);
        let signer = MediaSigner::load_or_create(dir.path(), Some(secret.clone())).unwrap();
        assert!(!dir.path().join(SECRET_FILE).exists());
        let link = signer.sign_until("imp1", "video.mp4", "alice", NOW + 60);
        assert_eq!(
            MediaSigner::from_secret(secret.as_bytes()).verify_at(
                "imp1",
                "video.mp4",
                "alice",
                Some(query(&link)),
                NOW
            ),
            Ok(())
        );
        let err = MediaSigner::load_or_create(dir.path(), Some("short".into())).unwrap_err();
        assert!(err.to_string().contains("REELTIME_MEDIA_SECRET"));
    }
}
