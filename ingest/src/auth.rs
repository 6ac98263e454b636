//! Bearer token verification. The person and the device come from the token only.
//!
//! HS256 uses `auth.hs256_secret`; RS256 or ES256 (chosen by the key type) uses the PEM
//! public key in `auth.public_key_file`. The algorithm in the token header only selects one
//! of the configured keys; `alg: none` and every other algorithm are rejected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::config::AuthConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Most verified tokens remembered (a device reuses its token for every request).
pub const MAX_CACHED_TOKENS: usize = 100_000;

/// Who is speaking, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub person_id: String,
    pub device_id: String,
}

/// A request that could not be authenticated; the message is the `reason` sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// A configuration problem with the keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read auth.public_key_file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("auth.public_key_file {0} is neither an RSA nor an EC (P-256) PEM public key")]
    Parse(String),
    #[error("no verification key configured (auth.hs256_secret or auth.public_key_file)")]
    None,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    device_id: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

/// A token that passed full verification, and the time window in which it stays valid.
#[derive(Debug, Clone)]
struct Verified {
    id: Identity,
    exp: u64,
    nbf: Option<u64>,
}

impl Verified {
    /// The same time checks as `jsonwebtoken` (with `leeway`) at `now` (epoch seconds).
    fn is_current(&self, now: u64, leeway: u64) -> bool {
        self.exp >= now.saturating_sub(leeway) && self.nbf.is_none_or(|nbf| nbf <= now + leeway)
    }
}

/// Tokens already verified, keyed by the exact token string (a bounded `quick_cache`).
///
/// Signature, algorithm and claims of a token never change, and the keys are fixed for the
/// life of the process, so a token that passed full verification only needs its time window
/// checked again; anything not in the cache, or no longer inside its window, goes through full
/// verification (which also produces the precise error). Entries past their window are not
/// removed when looked up; the cache's eviction (it keeps what is used) drops them.
#[derive(Debug)]
struct TokenCache(Option<quick_cache::sync::Cache<Box<str>, Verified>>);

impl TokenCache {
    /// At most `max_entries` tokens; none at all for 0.
    fn new(max_entries: usize) -> TokenCache {
        TokenCache((max_entries > 0).then(|| quick_cache::sync::Cache::new(max_entries)))
    }

    fn get(&self, token: &str, now: u64, leeway: u64) -> Option<Identity> {
        self.0
            .as_ref()?
            .get(token)
            .filter(|v| v.is_current(now, leeway))
            .map(|v| v.id)
    }

    fn insert(&self, token: &str, v: Verified) {
        if let Some(c) = &self.0 {
            c.insert(token.into(), v);
        }
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    leeway: u64,
    cache: TokenCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.keys.iter().map(|k| k.0).collect();
        f.debug_struct("Verifier")
            .field("algorithms", &algs)
            .finish()
    }
}

fn validation(alg: Algorithm, leeway_s: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway_s;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "sub"]);
    v
}

impl Verifier {
    pub fn from_config(cfg: &AuthConfig) -> Result<Verifier, KeyError> {
        let leeway = cfg.leeway.as_secs();
        let mut keys = Vec::new();
        if !cfg.hs256_secret.is_empty() {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(cfg.hs256_secret.as_bytes()),
                validation(Algorithm::HS256, leeway),
            ));
        }
        if !cfg.public_key_file.is_empty() {
            let path = &cfg.public_key_file;
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let (alg, key) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (Algorithm::ES256, k)
            } else {
                return Err(KeyError::Parse(path.clone()));
            };
            keys.push((alg, key, validation(alg, leeway)));
        }
        if keys.is_empty() {
            return Err(KeyError::None);
        }
        Ok(Verifier {
            keys,
            leeway,
            cache: TokenCache::new(MAX_CACHED_TOKENS),
        })
    }

    /// Tokens currently remembered as verified.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies the value of an `Authorization` header.
    pub fn verify_header(&self, header: Option<&[u8]>) -> Result<Identity, AuthError> {
        let h = header.ok_or_else(|| AuthError("missing Authorization header".into()))?;
        let h = std::str::from_utf8(h)
            .map_err(|_| AuthError("malformed Authorization header".into()))?;
        let token = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(AuthError("expected `Authorization: Bearer <token>`".into())),
        };
        self.verify(token)
    }

    /// Verifies a compact JWT: signature, algorithm, `exp`, `nbf` and the identity claims.
    /// A token seen before is only checked against its `exp` and `nbf` again.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(id) = self.cache.get(token, now, self.leeway) {
            return Ok(id);
        }
        let (id, exp, nbf) = self.verify_fully(token)?;
        if let Some(exp) = exp {
            let v = Verified {
                id: id.clone(),
                exp,
                nbf,
            };
            self.cache.insert(token, v);
        }
        Ok(id)
    }

    /// Full verification, without the cache; also returns `exp` and `nbf`.
    #[allow(clippy::type_complexity)]
    fn verify_fully(&self, token: &str) -> Result<(Identity, Option<u64>, Option<u64>), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `none` and unknown algorithms fail to parse as an Algorithm.
            ErrorKind::Json(_) if token_alg_is(token, "none") => {
                AuthError("algorithm `none` is not accepted".into())
            }
            ErrorKind::Json(_) => AuthError("unsupported or malformed token header".into()),
            _ => AuthError("malformed token".into()),
        })?;
        let Some((_, key, validation)) = self.keys.iter().find(|k| k.0 == header.alg) else {
            return Err(AuthError(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
            AuthError(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_string(),
                ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_string(),
                ErrorKind::InvalidSignature => "bad signature".to_string(),
                ErrorKind::InvalidAlgorithm => "algorithm does not match the key".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
                ErrorKind::InvalidClaimFormat(c) => format!("malformed claim `{c}`"),
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                    "bad signature".to_string()
                }
                _ => "malformed token".to_string(),
            })
        })?;
        let claim = |v: Option<serde_json::Value>, name: &str| match v {
            // No control characters: ids become Kafka keys, ClickHouse values and log fields,
            // and the processor's changelog reserves keys starting with NUL.
            Some(serde_json::Value::String(s))
                if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) =>
            {
                Ok(s)
            }
            None | Some(serde_json::Value::Null) => {
                Err(AuthError(format!("missing claim `{name}`")))
            }
            Some(_) => Err(AuthError(format!(
                "claim `{name}` must be a non-empty string of at most 256 bytes without control characters"
            ))),
        };
        let id = Identity {
            person_id: claim(data.claims.sub, "sub")?,
            device_id: claim(data.claims.device_id, "device_id")?,
        };
        // `exp` is required and was validated as an integer; a token whose times are not
        // plain integers is simply not cached.
        let exp = data.claims.exp.as_ref().and_then(serde_json::Value::as_u64);
        let nbf = match &data.claims.nbf {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(v) => v.as_u64().map(Some),
        };
        Ok((id, nbf.and(exp), nbf.flatten()))
    }
}

/// Whether the (unverified) header of `token` names algorithm `alg`; for the error message only.
fn token_alg_is(token: &str, alg: &str) -> bool {
    #[derive(Deserialize)]
    struct H {
        alg: String,
    }
    let Some(head) = token.split('.').next() else {
        return false;
    };
    // The alphabet and padding `jsonwebtoken` decodes the header with: this is only called when
    // it decoded the base64 and failed on the JSON.
    URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<H>(&b).ok())
        .is_some_and(|h| h.alg.eq_ignore_ascii_case(alg))
}

/// Signs tokens, for tests, examples and the benchmark (never used by the service itself).
pub mod testing {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    /// An HS256 token with the given claims JSON object.
    pub fn hs256(secret: &str, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("HS256 signing")
    }

    /// A typical HS256 token for `person`/`device`, valid for an hour.
    pub fn hs256_for(secret: &str, person: &str, device: &str) -> String {
        let exp = common::record::now_millis() / 1000 + 3600;
        hs256(
            secret,
            &serde_json::json!({"sub": person, "device_id": device, "exp": exp}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &str = "test-secret";

    fn cfg(secret: &str, pem: &str) -> AuthConfig {
        AuthConfig {
            hs256_secret: secret.into(),
            public_key_file: pem.into(),
            leeway: Duration::from_secs(30),
        }
    }

    fn now() -> i64 {
        common::record::now_millis() / 1000
    }

    fn keys_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
    }

    fn err(v: &Verifier, token: &str) -> String {
        v.verify(token).unwrap_err().0
    }

    #[test]
    fn verified_tokens_are_cached_within_their_time_window() {
        let v = Verifier::from_config(&cfg(SECRET, "")).unwrap();
        let exp = now() + 60;
        let ok = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d1","exp":exp}));
        let id = v.verify(&ok).unwrap();
        assert_eq!(v.cached_tokens(), 1);
        assert_eq!(v.verify(&ok).unwrap(), id);
        assert_eq!(v.cached_tokens(), 1);
        // The cached entry honours `exp` with the same leeway (30 s) as full verification.
        let exp = exp as u64;
        assert_eq!(v.cache.get(&ok, exp + 30, 30), Some(id.clone()));
        assert_eq!(v.cache.get(&ok, exp + 31, 30), None);
        // ...and `nbf`.
        let nbf = now() as u64 + 20;
        let t = testing::hs256(
            SECRET,
            &json!({"sub":"p2","device_id":"d2","exp":now()+60,"nbf":nbf}),
        );
        assert!(v.verify(&t).is_ok());
        assert!(v.cache.get(&t, nbf - 30, 30).is_some());
        assert!(v.cache.get(&t, nbf - 31, 30).is_none());
        // A token differing from a cached one in any byte is verified in full.
        let mut parts: Vec<String> = ok.split('.').map(String::from).collect();
        let sig = parts[2].clone();
        parts[2] = format!(
            "{}{}",
            if sig.starts_with('A') { "B" } else { "A" },
            &sig[1..]
        );
        assert_eq!(err(&v, &parts.join(".")), "bad signature");
        assert_eq!(err(&v, &format!("{ok} ")), "malformed token");
        // Rejected tokens are never cached.
        let expired = testing::hs256(
            SECRET,
            &json!({"sub":"p3","device_id":"d3","exp":now()-100}),
        );
        assert_eq!(err(&v, &expired), "token expired");
        assert_eq!(err(&v, &expired), "token expired");
        assert_eq!(v.cached_tokens(), 2);
    }

    #[test]
    fn token_cache_is_bounded() {
        let c = TokenCache::new(256);
        let id = Identity {
            person_id: "p".into(),
            device_id: "d".into(),
        };
        for i in 0..10_000 {
            let v = Verified {
                id: id.clone(),
                exp: 2_000_000_000,
                nbf: None,
            };
            c.insert(&format!("token-{i}"), v);
        }
        assert!(c.len() <= 256, "{}", c.len());
        assert!(c.get("token-9999", 1_000_000_000, 30).is_some());
    }

    #[test]
    fn hs256_matrix() {
        let v = Verifier::from_config(&cfg(SECRET, "")).unwrap();
        let ok = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d1","exp":now()+60}));
        assert_eq!(
            v.verify(&ok).unwrap(),
            Identity {
                person_id: "p1".into(),
                device_id: "d1".into()
            }
        );
        // Within the leeway is still fine, beyond it is expired.
        let t = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d1","exp":now()-10}));
        assert!(v.verify(&t).is_ok());
        let t = testing::hs256(
            SECRET,
            &json!({"sub":"p1","device_id":"d1","exp":now()-100}),
        );
        assert_eq!(err(&v, &t), "token expired");
        let t = testing::hs256(
            "other",
            &json!({"sub":"p1","device_id":"d1","exp":now()+60}),
        );
        assert_eq!(err(&v, &t), "bad signature");
        let t = testing::hs256(SECRET, &json!({"device_id":"d1","exp":now()+60}));
        assert_eq!(err(&v, &t), "missing claim `sub`");
        let t = testing::hs256(SECRET, &json!({"sub":"p1","exp":now()+60}));
        assert_eq!(err(&v, &t), "missing claim `device_id`");
        let t = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d1"}));
        assert_eq!(err(&v, &t), "missing claim `exp`");
        let t = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"","exp":now()+60}));
        assert!(err(&v, &t).contains("device_id"));
        let t = testing::hs256(SECRET, &json!({"sub":"p1","device_id":7,"exp":now()+60}));
        assert!(err(&v, &t).contains("device_id"));
        // A NUL or any control character in an id is refused (the changelog reserves NUL keys).
        let t = testing::hs256(
            SECRET,
            &json!({"sub":"\u{0}clock","device_id":"d1","exp":now()+60}),
        );
        assert!(
            err(&v, &t).contains("control characters"),
            "{}",
            err(&v, &t)
        );
        let t = testing::hs256(
            SECRET,
            &json!({"sub":"p1","device_id":"d\n1","exp":now()+60}),
        );
        assert!(err(&v, &t).contains("device_id"));
        let t = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d","exp":"soon"}));
        assert!(err(&v, &t).contains("exp"), "{}", err(&v, &t));
        let t = testing::hs256(
            SECRET,
            &json!({"sub":"p","device_id":"d","exp":now()+60,"nbf":now()+600}),
        );
        assert!(err(&v, &t).contains("nbf"));
        assert_eq!(err(&v, "garbage"), "malformed token");
        assert_eq!(err(&v, ""), "malformed token");
    }

    #[test]
    fn alg_none_and_tampering_are_rejected() {
        let v = Verifier::from_config(&cfg(SECRET, "")).unwrap();
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let claims = enc(&format!(
            r#"{{"sub":"p1","device_id":"d1","exp":{}}}"#,
            now() + 60
        ));
        for alg in ["none", "None", "NONE"] {
            let t = format!(
                "{}.{claims}.",
                enc(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#))
            );
            assert_eq!(err(&v, &t), "algorithm `none` is not accepted", "{alg}");
        }
        // Swap the claims of a valid token for another person's: signature no longer matches.
        let ok = testing::hs256(SECRET, &json!({"sub":"p1","device_id":"d1","exp":now()+60}));
        let parts: Vec<&str> = ok.split('.').collect();
        let other = enc(&format!(
            r#"{{"sub":"p2","device_id":"d1","exp":{}}}"#,
            now() + 60
        ));
        assert_eq!(
            err(&v, &format!("{}.{other}.{}", parts[0], parts[2])),
            "bad signature"
        );
        // An HS384 token is not accepted even with the right secret.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub":"p1","device_id":"d1","exp":now()+60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(err(&v, &t).contains("not accepted"));
    }

    #[test]
    fn header_parsing() {
        let v = Verifier::from_config(&cfg(SECRET, "")).unwrap();
        let ok = testing::hs256_for(SECRET, "p", "d");
        assert!(
            v.verify_header(Some(format!("Bearer {ok}").as_bytes()))
                .is_ok()
        );
        assert!(
            v.verify_header(Some(format!("bearer {ok}").as_bytes()))
                .is_ok()
        );
        assert!(v.verify_header(None).unwrap_err().0.contains("missing"));
        assert!(
            v.verify_header(Some(format!("Basic {ok}").as_bytes()))
                .is_err()
        );
        assert!(v.verify_header(Some(ok.as_bytes())).is_err());
        assert!(v.verify_header(Some(b"Bearer \xff")).is_err());
    }

    fn asym(alg: Algorithm, private: &str, public: &str) {
        let dir = keys_dir();
        let v = Verifier::from_config(&cfg("", dir.join(public).to_str().unwrap())).unwrap();
        let pem = std::fs::read(dir.join(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let sign =
            |c: serde_json::Value| jsonwebtoken::encode(&Header::new(alg), &c, &key).unwrap();
        let id = v
            .verify(&sign(json!({"sub":"p9","device_id":"d9","exp":now()+60})))
            .unwrap();
        assert_eq!(id.person_id, "p9");
        assert_eq!(
            err(
                &v,
                &sign(json!({"sub":"p9","device_id":"d9","exp":now()-100}))
            ),
            "token expired"
        );
        assert_eq!(
            err(&v, &sign(json!({"sub":"p9","exp":now()+60}))),
            "missing claim `device_id`"
        );
        // HS256 is disabled when no secret is configured, even signed with the public key
        // bytes (the classic algorithm-confusion attack).
        let public_pem = std::fs::read(dir.join(public)).unwrap();
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"p9","device_id":"d9","exp":now()+60}),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert!(err(&v, &confused).contains("not accepted"));
        // A flipped signature byte fails.
        let tampered = {
            let t = sign(json!({"sub":"p9","device_id":"d9","exp":now()+60}));
            let mut parts: Vec<String> = t.split('.').map(String::from).collect();
            let sig = parts[2].clone();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            parts[2] = format!("{flipped}{}", &sig[1..]);
            parts.join(".")
        };
        assert_eq!(err(&v, &tampered), "bad signature");
    }

    #[test]
    fn rs256_with_public_key() {
        asym(Algorithm::RS256, "rs256_private.pem", "rs256_public.pem");
    }

    #[test]
    fn es256_with_public_key() {
        asym(Algorithm::ES256, "es256_private.pem", "es256_public.pem");
    }

    #[test]
    fn key_configuration_errors() {
        assert!(matches!(
            Verifier::from_config(&cfg("", "")),
            Err(KeyError::None)
        ));
        assert!(matches!(
            Verifier::from_config(&cfg("", "/nonexistent.pem")),
            Err(KeyError::Read { .. })
        ));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not a pem").unwrap();
        assert!(matches!(
            Verifier::from_config(&cfg("", f.path().to_str().unwrap())),
            Err(KeyError::Parse(_))
        ));
    }
}
