//! The webhook signature verifier (`src/signing.rs`) on arbitrary headers, bodies and clocks.
//!
//! Input: an arbitrary header, a body, a signing time, a tolerance, then edits to apply to a
//! genuine header (see [`forge`]). Never panics, and:
//!
//! - the verifier never accepts what the signer did not make: whenever `verify` says OK (for
//!   the arbitrary header, and for every forgery made by editing a genuine header: a changed
//!   hex digit, timestamp or byte, entries added, dropped, reordered or padded), the header
//!   carries the `v1=` signature that HMAC-SHA256 (computed here, not by `intake`) gives for
//!   one of the receiver's secrets, that header's timestamp and the body, and the timestamp is
//!   within the tolerance of now (other schemes' entries, spaces around entries, upper-case
//!   hex, a `+` or leading zeros in `t=` are accepted, as they do not change what is signed);
//! - what `sign` makes is exactly `t=<t>,v1=<that HMAC in hex>`;
//! - a signed header verifies within the tolerance and is refused one second outside it,
//!   under another secret, with another body or another timestamp; nothing verifies without a
//!   secret;
//! - the providers' presets (GitHub `sha256=<hex>` of the body, Slack `v0=<hex>` of
//!   `v0:{t}:{body}` with the timestamp in its own header): what `Scheme::sign` makes is the
//!   HMAC computed here, an arbitrary signature header verifies only if it is that HMAC, and a
//!   signature is refused for another body, another secret or (Slack) another timestamp.
#![no_main]

use hmac::{Hmac, Mac};
use intake::signing::{Scheme, SignatureError, sign, sign_all, verify};
use libfuzzer_sys::arbitrary::{Result as GenResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// The receiver's secrets (a rotation: current and previous).
const SECRETS: [&[u8]; 2] = [b"whsec-current", b"whsec-previous"];
/// A secret the receiver does not have.
const WRONG: &[u8] = b"whsec-attacker";

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((header, body, t, tolerance, flip)) = u.arbitrary::<(&str, &[u8], i64, i64, u8)>()
    else {
        return;
    };

    // Arbitrary headers: refused, or authentic; never a panic; never accepted without a secret.
    if verify(header, body, &SECRETS, t, tolerance).is_ok() {
        assert_authentic(header, body, t, tolerance);
    }
    assert!(verify(header, body, &[], t, tolerance).is_err());

    // Forgeries from a genuine header.
    let _ = forge(&mut u, body, t);

    presets(header, body, t, flip);

    // The signer's output, against HMAC-SHA256 computed here.
    let signed = sign(SECRETS[1], t, body);
    assert_eq!(
        signed,
        format!("t={t},v1={}", hmac_hex(SECRETS[1], t, body))
    );

    // Round trip at the signing time, with either secret, or both (a rotation).
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

/// The GitHub and Slack presets against HMAC-SHA256 computed here.
fn presets(arbitrary: &str, body: &[u8], t: i64, flip: u8) {
    for (name, prefix, payload) in [
        ("github", "sha256=", body.to_vec()),
        ("slack", "v0=", [format!("v0:{t}:").as_bytes(), body].concat()),
    ] {
        let scheme = Scheme::preset(name).unwrap();
        let signed = scheme.sign(&SECRETS[..1], t, body);
        let expected = format!("{prefix}{}", mac_hex(SECRETS[0], &payload));
        assert_eq!(signed[0].1, expected, "{name}");
        let ok = |list: &[(String, String)], b: &[u8], secrets: &[&[u8]]| {
            scheme
                .verify(
                    |n| {
                        list.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.as_str())
                    },
                    b,
                    secrets,
                    t,
                    i64::MAX,
                )
                .is_ok()
        };
        assert!(ok(&signed, body, &SECRETS), "{name}: a genuine signature");
        assert!(!ok(&signed, body, &SECRETS[1..]), "{name}: another secret");
        let mut altered = body.to_vec();
        match altered.get_mut(usize::from(flip) % body.len().max(1)) {
            Some(b) => *b ^= flip | 1,
            None => altered.push(flip),
        }
        assert!(!ok(&signed, &altered, &SECRETS), "{name}: another body");
        // An arbitrary signature header: accepted only if it is the HMAC (any hex case).
        let mut forged = signed.clone();
        forged[0].1 = arbitrary.to_owned();
        if ok(&forged, body, &SECRETS) {
            let genuine = SECRETS.iter().any(|s| {
                arbitrary
                    .trim()
                    .eq_ignore_ascii_case(&format!("{prefix}{}", mac_hex(s, &payload)))
            });
            assert!(genuine, "{name}: accepted {arbitrary:?}");
        }
        if name == "slack"
            && let Some(t2) = t.checked_add(1)
        {
            let mut moved = signed.clone();
            moved[1].1 = t2.to_string();
            assert!(!ok(&moved, body, &SECRETS), "slack: another timestamp");
        }
    }
}

/// HMAC-SHA256 of `payload` under `secret`, in lower-case hex.
fn mac_hex(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// Signs `body` at `t` with some of the receiver's secrets and the wrong one, edits the header
/// as the input says, and verifies it at a time near `t` after each edit.
fn forge(u: &mut Unstructured<'_>, body: &[u8], t: i64) -> GenResult<()> {
    let tolerance = u.int_in_range(0..=300_i64)?;
    let Some(now) = t.checked_add(u.int_in_range(-tolerance - 2..=tolerance + 2)?) else {
        return Ok(());
    };
    let mut signers = Vec::new();
    for secret in [SECRETS[0], SECRETS[1], WRONG] {
        if u.arbitrary()? {
            signers.push(secret);
        }
    }
    let mut header = sign_all(&signers, t, body);
    for _ in 0..u.int_in_range(1..=6)? {
        edit(u, &mut header, t)?;
        if verify(&header, body, &SECRETS, now, tolerance).is_ok() {
            assert_authentic(&header, body, now, tolerance);
        }
    }
    Ok(())
}

/// One edit of an ASCII header (it stays ASCII).
fn edit(u: &mut Unstructured<'_>, header: &mut String, t: i64) -> GenResult<()> {
    const HEX: &[u8] = b"0123456789abcdefABCDEF";
    let mut entries: Vec<String> = header.split(',').map(str::to_owned).collect();
    let at = |u: &mut Unstructured<'_>, len: usize| u.choose_index(len.max(1));
    match u.int_in_range(0..=8)? {
        // Another hex digit (anywhere: most of a header is hex).
        0 => {
            let p = at(u, header.len())?;
            if header.as_bytes().get(p).is_some_and(u8::is_ascii_hexdigit) {
                let digit = char::from(*u.choose(HEX)?);
                header.replace_range(p..=p, digit.encode_utf8(&mut [0; 4]));
            }
            return Ok(());
        }
        // Another byte.
        1 => {
            let p = at(u, header.len())?;
            if p < header.len() {
                let c = char::from(u.int_in_range(0x20..=0x7e)?);
                header.replace_range(p..=p, c.encode_utf8(&mut [0; 4]));
            }
            return Ok(());
        }
        // Another timestamp, or the same one written otherwise.
        2 => {
            let t2 = t.saturating_add(u.int_in_range(-2..=2)?);
            let text = match u.int_in_range(0..=2)? {
                0 => format!("t={t2}"),
                1 => format!("t=+{t2}"),
                _ => format!("t=0{t2}"),
            };
            match entries
                .iter_mut()
                .find(|e| e.trim_start().starts_with("t="))
            {
                Some(e) => *e = text,
                None => entries.push(text),
            }
        }
        // Spaces around an entry.
        3 => {
            let i = at(u, entries.len())?;
            if let Some(e) = entries.get_mut(i) {
                *e = format!(" {e}\t");
            }
        }
        // Upper-case hex.
        4 => {
            *header = header
                .to_ascii_uppercase()
                .replace("T=", "t=")
                .replace("V1=", "v1=");
            return Ok(());
        }
        // Another entry: another scheme, a junk signature, a second timestamp.
        5 => {
            let sig: String = (0..64)
                .map(|_| u.choose(HEX).map(|&b| char::from(b)))
                .collect::<GenResult<_>>()?;
            let entry = match u.int_in_range(0..=2)? {
                0 => format!("v0={sig}"),
                1 => format!("v1={sig}"),
                _ => format!("t={}", t.wrapping_sub(1)),
            };
            let i = u.int_in_range(0..=entries.len())?;
            entries.insert(i, entry);
        }
        // One entry fewer.
        6 => {
            let i = at(u, entries.len())?;
            if i < entries.len() {
                entries.remove(i);
            }
        }
        // Entries in another order.
        7 => {
            let n = at(u, entries.len())?.min(entries.len());
            entries.rotate_left(n);
        }
        // A signature's entry cut short or made longer.
        _ => {
            let i = at(u, entries.len())?;
            if let Some(e) = entries.get_mut(i) {
                if u.arbitrary()? {
                    e.pop();
                } else {
                    e.push(char::from(*u.choose(HEX)?));
                }
            }
        }
    }
    *header = entries.join(",");
    Ok(())
}

/// The header carries, for one of the receiver's secrets, the signature of the body at the
/// header's own timestamp, and that timestamp is fresh.
fn assert_authentic(header: &str, body: &[u8], now: i64, tolerance: i64) {
    let entries: Vec<&str> = header.split(',').map(str::trim).collect();
    let t = entries
        .iter()
        .find_map(|e| e.strip_prefix("t=")?.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("accepted without a timestamp: {header:?}"));
    assert!(
        now.abs_diff(t) <= tolerance.max(0).unsigned_abs(),
        "accepted a stale timestamp: {header:?} at {now} with tolerance {tolerance}"
    );
    let genuine = SECRETS.iter().any(|secret| {
        let expected = hmac_hex(secret, t, body);
        entries.iter().any(|e| {
            e.strip_prefix("v1=")
                .is_some_and(|v| v.eq_ignore_ascii_case(&expected))
        })
    });
    assert!(
        genuine,
        "accepted a signature the signer did not make: {header:?} for body {body:?}"
    );
}

/// HMAC-SHA256 of `"{t}.{body}"` under `secret`, in lower-case hex.
fn hmac_hex(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}
