//! How a record holds its data: as bytes, or as the base64 text it was
//! delivered in, which an archive line takes without decoding it.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::model::kpl;

/// How a record holds its data: its bytes (`Vec<u8>`), or the base64 text
/// it arrived as ([`Base64`]). Lines and events carry the data as base64
/// either way.
pub trait RecordData: Clone + fmt::Debug + Send + Sync + 'static {
    /// From base64 text as Kinesis and Lambda write it (as bytes: a parser
    /// needn't check that it is UTF-8, base64 being ASCII).
    fn from_base64(text: Cow<'_, [u8]>) -> Result<Self, base64::DecodeError>;

    /// The base64 text.
    fn base64(&self) -> Cow<'_, str>;

    /// Appends the base64 text, without quotes.
    fn write_base64(&self, out: &mut Vec<u8>);

    /// Bytes of the base64 text: what the data adds to a line or an event.
    fn base64_len(&self) -> usize;

    /// Whether the data is a KPL aggregate.
    fn is_aggregated(&self) -> bool;

    fn into_bytes(self) -> Vec<u8>;
}

impl RecordData for Vec<u8> {
    fn from_base64(text: Cow<'_, [u8]>) -> Result<Self, base64::DecodeError> {
        BASE64.decode(text)
    }

    fn base64(&self) -> Cow<'_, str> {
        Cow::Owned(BASE64.encode(self))
    }

    fn write_base64(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.base64_len(), 0);
        BASE64
            .encode_slice(self, &mut out[start..])
            .expect("room for the base64 was made");
    }

    fn base64_len(&self) -> usize {
        self.len().div_ceil(3) * 4
    }

    fn is_aggregated(&self) -> bool {
        kpl::is_aggregated(self)
    }

    fn into_bytes(self) -> Vec<u8> {
        self
    }
}

/// A record's data as the base64 text an event delivered it in: standard
/// alphabet, padded, canonical (unused bits zero), as Kinesis and Lambda
/// write it, so it is the text [`super::encode_base64`] makes of the bytes.
///
/// The archiver keeps the data this way: its record lines take the text as
/// it is, where holding the bytes would decode every payload only to encode
/// it again for the line (most of the archiver's CPU before compression:
/// BENCHMARKS.md, "Archiver").
///
/// It holds the text's bytes, checked to be base64, so ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64(Vec<u8>);

impl Base64 {
    /// Checks `text` and keeps it: an error says what is wrong and where.
    pub fn new(text: impl Into<Vec<u8>>) -> Result<Self, base64::DecodeError> {
        let text = text.into();
        // The SIMD check is several times faster than decoding; it only
        // says that the text is bad, so the decoder says what and where.
        // Every text it accepts the decoder accepts too (a test holds the
        // two to it), which `decode` relies on.
        match base64_simd::STANDARD.check(&text) {
            Ok(()) => Ok(Self(text)),
            Err(_) => BASE64.decode(&text).map(|_| Self(text)),
        }
    }

    pub fn encode(bytes: &[u8]) -> Self {
        Self(BASE64.encode(bytes).into_bytes())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }

    /// The bytes.
    pub fn decode(&self) -> Vec<u8> {
        BASE64
            .decode(&self.0)
            .expect("a Base64 holds only text that decodes")
    }

    /// Length of the bytes, without decoding them.
    pub fn decoded_len(&self) -> usize {
        let padding = self.0.iter().rev().take(2).filter(|&&b| b == b'=').count();
        self.0.len() / 4 * 3 - padding
    }
}

impl RecordData for Base64 {
    fn from_base64(text: Cow<'_, [u8]>) -> Result<Self, base64::DecodeError> {
        Self::new(text.into_owned())
    }

    fn base64(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.as_str())
    }

    fn write_base64(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn base64_len(&self) -> usize {
        self.0.len()
    }

    /// From the first 8 characters, the only ones the magic is in: the
    /// rest of the data is decoded only if a sink needs the bytes.
    fn is_aggregated(&self) -> bool {
        // The magic's first 3 bytes are these 4 characters: most data is
        // told apart without decoding anything.
        if !self.0.starts_with(b"84ma") || self.decoded_len() <= kpl::MAGIC.len() + kpl::DIGEST_LEN
        {
            return false;
        }
        let mut head = [0; 6];
        // More than 20 bytes are at least 28 characters: the first 8 are
        // whole groups without padding, and checked base64.
        BASE64
            .decode_slice(&self.0[..8], &mut head)
            .is_ok_and(|_| head.starts_with(&kpl::MAGIC))
    }

    fn into_bytes(self) -> Vec<u8> {
        self.decode()
    }
}

pub(super) mod base64_data {
    use std::borrow::Cow;

    use super::RecordData;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: RecordData, S: Serializer>(
        data: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&data.base64())
    }

    pub fn deserialize<'de, T: RecordData, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = match <Cow<'de, str>>::deserialize(deserializer)? {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        };
        T::from_base64(text)
            .map_err(|e| serde::de::Error::custom(format!("data is not valid base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Base64 text, sometimes broken: the alphabet, padding in odd places,
    /// a symbol outside it, lengths of every remainder.
    fn arb_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::sample::select(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()
                ),
                1 => Just(b'='),
                1 => proptest::sample::select(b"-_*\n \"".to_vec()),
            ],
            0..80,
        )
        .prop_map(|bytes| String::from_utf8(bytes).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The SIMD check and base64's decoder accept the same texts, and
        /// what they accept is the one text of its bytes: so a line that
        /// copies the text is the line that encodes the bytes.
        #[test]
        fn the_check_accepts_what_the_decoder_does(text in arb_text()) {
            let simd = base64_simd::STANDARD.check(text.as_bytes()).is_ok();
            let decoded = BASE64.decode(text.as_bytes());
            prop_assert_eq!(simd, decoded.is_ok(), "{:?}", text);
            let kept = Base64::new(text.clone());
            prop_assert_eq!(kept.is_ok(), decoded.is_ok());
            if let (Ok(kept), Ok(bytes)) = (kept, decoded) {
                prop_assert_eq!(BASE64.encode(&bytes), text);
                prop_assert_eq!(kept.decoded_len(), bytes.len());
                prop_assert_eq!(kept.decode(), bytes);
            }
        }

        #[test]
        fn bytes_and_text_are_the_same_data(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = Base64::encode(&bytes);
            prop_assert_eq!(text.base64_len(), bytes.base64_len());
            prop_assert_eq!(text.base64(), bytes.base64());
            let (mut a, mut b) = (b"x".to_vec(), b"x".to_vec());
            text.write_base64(&mut a);
            bytes.write_base64(&mut b);
            prop_assert_eq!(a, b);
            prop_assert_eq!(text.is_aggregated(), bytes.is_aggregated());
            prop_assert_eq!(text.into_bytes(), bytes);
        }
    }

    /// Every text of up to 4 symbols from those that decide padding and
    /// unused bits (0, 1, 16 and 63 as values, `=`, one outside).
    #[test]
    fn the_check_agrees_on_every_short_text() {
        let symbols = b"ABQ/=*";
        let mut texts = vec![String::new()];
        let mut longest = texts.clone();
        for _ in 0..4 {
            longest = longest
                .iter()
                .flat_map(|t| symbols.iter().map(move |&s| format!("{t}{}", s as char)))
                .collect();
            texts.extend(longest.iter().cloned());
        }
        assert_eq!(texts.len(), 1 + 6 + 36 + 216 + 1296);
        for tail in texts {
            // Also after whole groups, and after enough of them for the
            // SIMD loop to run before the tail.
            for text in [
                tail.clone(),
                format!("QUJD{tail}"),
                "QUJD".repeat(10) + &tail,
            ] {
                assert_eq!(
                    base64_simd::STANDARD.check(text.as_bytes()).is_ok(),
                    BASE64.decode(text.as_bytes()).is_ok(),
                    "{text:?}"
                );
            }
        }
    }

    /// KPL detection from the text's first symbols agrees with the bytes'
    /// at the edges: 20 bytes of magic and digest (no body: not an
    /// aggregate), 21, and the magic altered.
    #[test]
    fn aggregates_are_told_from_the_text() {
        let mut data = kpl::MAGIC.to_vec();
        data.extend([7; 16]);
        for len in [0, 3, 4, 20, 21, 22, 23, 100] {
            let mut bytes = data.clone();
            bytes.resize(len, 9);
            for flip in [None, Some(0), Some(3)] {
                let mut bytes = bytes.clone();
                if let Some(i) = flip.filter(|&i| i < bytes.len()) {
                    bytes[i] ^= 1;
                }
                let text = Base64::encode(&bytes);
                assert_eq!(
                    text.is_aggregated(),
                    kpl::is_aggregated(&bytes),
                    "{len} bytes, flip {flip:?}"
                );
            }
        }
        let mut aggregate = data;
        aggregate.push(1);
        assert!(Base64::encode(&aggregate).is_aggregated());
    }

    #[test]
    fn bad_text_says_what_and_where() {
        let err = Base64::new("SGVs*G8=".to_owned()).unwrap_err();
        assert_eq!(err, base64::DecodeError::InvalidByte(4, b'*'));
        let err = Base64::new("SGVsbG9=".to_owned()).unwrap_err();
        assert!(
            matches!(err, base64::DecodeError::InvalidLastSymbol(..)),
            "{err:?}"
        );
    }
}
