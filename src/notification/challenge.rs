//! MSNP6's challenges: `CHL 0 challenge`, answered with `QRY TrID client-id 32` and the MD5 of
//! the challenge followed by the client's key. Off unless `[client] challenges` is set.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The client ids known here, each with its key. Official MSN 3.6-4.x, gaim and Kopete use
/// the first; aMSN 0.82 answers with the MSN 6.0 product id.
const CLIENT_KEYS: [(&str, &str); 2] = [
    ("msmsgs@msnmsgr.com", "Q1P7W2E4J9R8U3S5"),
    ("PROD0061VRRZH@4F", "JXQ6J@TUOGYV@N0M"),
];

/// A new challenge: 20 random decimal digits, as the official servers sent.
pub fn new_challenge() -> String {
    (0..20)
        .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
        .collect()
}

/// Whether `answer` is the right answer to `challenge` from the client `client_id`.
pub fn verify(challenge: &str, client_id: &str, answer: &[u8]) -> bool {
    let Some((_, key)) = CLIENT_KEYS.iter().find(|(id, _)| *id == client_id) else {
        return false;
    };
    let expected = hex::encode(Md5::digest(format!("{challenge}{key}")));
    answer.len() == expected.len() && bool::from(answer.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_verifies() {
        // The protocol pages' example: CHL 0 15570131571988941333 from MSN 3.6.
        assert!(verify(
            "15570131571988941333",
            "msmsgs@msnmsgr.com",
            b"8f2f5a91b72102cd28355e9fc9000d6e"
        ));
        assert!(!verify(
            "15570131571988941333",
            "msmsgs@msnmsgr.com",
            b"00000000000000000000000000000000"
        ));
        assert!(!verify("1", "unknown@client", b"x"));
        let c = new_challenge();
        assert_eq!(c.len(), 20);
        assert!(c.bytes().all(|b| b.is_ascii_digit()));
        let answer = hex::encode(Md5::digest(format!("{c}JXQ6J@TUOGYV@N0M")));
        assert!(verify(&c, "PROD0061VRRZH@4F", answer.as_bytes()));
    }
}
