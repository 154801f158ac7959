//! The webhook signature verifier (`src/signing.rs`) on arbitrary headers, bodies and clocks.
//!
//! Never panics; a header made by `sign` verifies within the tolerance and nowhere else; any
//! change to the body, the secret or the timestamp is refused; a header that was not made with
//! a configured secret is never accepted.
#![no_main]

use intake::signing::{SignatureError, sign, sign_all, verify};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&[u8]; 2] = [b"whsec-current", b"whsec-previous"];

fuzz_target!(|input: (&str, &[u8], i64, i64, u8)| {
    let (header, body, t, tolerance, flip) = input;
    // Arbitrary headers: refused or accepted, never a panic; never accepted without a secret.
    let _ = verify(header, body, &SECRETS, t, tolerance);
    assert!(verify(header, body, &[], t, tolerance).is_err());

    // Round trip at the signing time, with either secret, or both (a rotation).
    let signed = sign(SECRETS[1], t, body);
    assert_eq!(verify(&signed, body, &SECRETS, t, 0), Ok(()));
    assert_eq!(
        verify(&sign_all(&SECRETS, t, body), body, &SECRETS[..1], t, 0),
        Ok(())
    );
    // Another secret.
    assert_eq!(
        verify(&signed, body, &SECRETS[..1], t, i64::MAX),
        Err(SignatureError::BadSignature)
    );
    // Another body.
    let mut altered = body.to_vec();
    match altered.get_mut(usize::from(flip) % body.len().max(1)) {
        Some(b) => *b ^= flip | 1,
        None => altered.push(flip),
    }
    assert_eq!(
        verify(&signed, &altered, &SECRETS, t, i64::MAX),
        Err(SignatureError::BadSignature)
    );
    // Another timestamp in the header (a replay with a fresh t= and the old MAC).
    if let Some(t2) = t.checked_add(1) {
        let replayed = signed.replacen(&format!("t={t}"), &format!("t={t2}"), 1);
        assert_eq!(
            verify(&replayed, body, &SECRETS, t2, i64::MAX),
            Err(SignatureError::BadSignature)
        );
    }
    // The tolerance window, both sides.
    let tolerance = tolerance.rem_euclid(1 << 40);
    for now in [t.checked_add(tolerance), t.checked_sub(tolerance)]
        .into_iter()
        .flatten()
    {
        assert_eq!(verify(&signed, body, &SECRETS, now, tolerance), Ok(()));
    }
    for now in [t.checked_add(tolerance + 1), t.checked_sub(tolerance + 1)]
        .into_iter()
        .flatten()
    {
        assert!(matches!(
            verify(&signed, body, &SECRETS, now, tolerance),
            Err(SignatureError::StaleTimestamp { .. })
        ));
    }
});
