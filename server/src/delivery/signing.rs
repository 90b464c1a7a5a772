// Temporary placeholder so the crate compiles; the real module replaces this file.
pub struct SigningSecret(Vec<u8>);
#[derive(Debug, thiserror::Error)]
#[error("bad secret")]
pub struct SecretError;
impl SigningSecret {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        Ok(SigningSecret(s.as_bytes().to_vec()))
    }
    pub fn generate() -> (String, SigningSecret) {
        (
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            SigningSecret(vec![]),
        )
    }
}
pub fn hint(s: &str) -> String {
    s.chars().take(4).collect()
}
pub fn sign(_s: &SigningSecret, _id: &str, _ts: i64, _body: &[u8]) -> String {
    "v1,x".into()
}
