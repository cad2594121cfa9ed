//! What the scripts answer, and the user's hash read back as a record (formats 1 to 4; see
//! the field list in `lua/add.lua`).

use std::collections::HashMap;

use redis::Value;

use super::super::StoreError;
use crate::domain::{FactorId, FactorRecord, FactorState, Lock, TotpParams, UnixMicros};

/// The newest format this release reads and writes.
pub(super) const FORMAT: i64 = 4;

/// The parameters a format-4 record without `a`, `d` and `p` has. Fixed by the format: the
/// records already written keep meaning them, whatever a later default becomes.
pub(super) const IMPLIED_PARAMS: TotpParams = TotpParams::APP_DEFAULT;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A script reply: a status word followed by integers, and at the end perhaps the events
/// the change wrote, or "fed" when it appended them to the organization's feed itself
/// (`lua/audit.lua`'s `hand_on`).
pub(super) struct Reply {
    pub status: String,
    numbers: Vec<i64>,
    written: Vec<String>,
    fed: bool,
}

impl Reply {
    /// Parses a reply; the statuses every script may give (`late`, `format`) become errors.
    pub(super) fn parse(values: Vec<Value>) -> Result<Self, StoreError> {
        let mut values = values.into_iter();
        let status = match values.next() {
            Some(Value::BulkString(bytes)) => {
                String::from_utf8(bytes).map_err(|_| corrupt("status"))?
            }
            Some(Value::SimpleString(text)) => text,
            _ => return Err(corrupt("script reply has no status")),
        };
        let mut numbers = Vec::new();
        let mut written = Vec::new();
        let mut fed = false;
        for value in values {
            match value {
                Value::Int(n) if written.is_empty() && !fed => numbers.push(n),
                Value::BulkString(word) if word == b"fed" && written.is_empty() && !fed => {
                    fed = true;
                }
                Value::Array(elements) if written.is_empty() && !fed => {
                    written = elements
                        .into_iter()
                        .map(|element| match element {
                            Value::BulkString(bytes) => String::from_utf8(bytes)
                                .map_err(|_| corrupt("written event is not text")),
                            _ => Err(corrupt("written event is not text")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(corrupt("script reply is not numeric")),
            }
        }
        let reply = Self {
            status,
            numbers,
            written,
            fed,
        };
        match reply.status.as_str() {
            // Redis's clock passed the deadline before the script started: nothing changed.
            "late" => Err(StoreError::Timeout),
            "format" => Err(StoreError::NewerFormat(reply.number(0)?)),
            _ => Ok(reply),
        }
    }

    pub(super) fn number(&self, index: usize) -> Result<i64, StoreError> {
        self.numbers
            .get(index)
            .copied()
            .ok_or_else(|| corrupt("script reply too short"))
    }

    pub(super) fn unsigned(&self, index: usize) -> Result<u64, StoreError> {
        u64::try_from(self.number(index)?).map_err(|_| corrupt("negative count"))
    }

    pub(super) fn count(&self, index: usize) -> Result<u32, StoreError> {
        u32::try_from(self.number(index)?).map_err(|_| corrupt("count out of range"))
    }

    /// The events the change wrote: the id of the source's event before them ('' for none),
    /// then their elements; empty when the script answered none.
    pub(super) fn written(&self) -> &[String] {
        &self.written
    }

    /// Whether the change appended its events to the organization's feed itself.
    pub(super) fn fed(&self) -> bool {
        self.fed
    }

    pub(super) fn unexpected(&self) -> StoreError {
        corrupt(&self.status)
    }
}

/// A user's hash as read back: by HGETALL (every field, by name) or by the check's HMGET
/// (`FactorFields`, by position), so that the check's read builds no map.
pub(super) trait Fields {
    fn field(&self, name: &str) -> Option<&[u8]>;
}

impl Fields for HashMap<String, Vec<u8>> {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(Vec::as_slice)
    }
}

/// The values of an HMGET of `FACTOR_FIELDS`, in that order.
pub(super) struct FactorFields(pub Vec<Option<Vec<u8>>>);

impl Fields for FactorFields {
    fn field(&self, name: &str) -> Option<&[u8]> {
        let index = FACTOR_FIELDS.iter().position(|known| *known == name)?;
        self.0.get(index)?.as_deref()
    }
}

fn text_field<'a>(fields: &'a impl Fields, name: &str) -> Result<&'a str, StoreError> {
    let bytes = fields.field(name).ok_or_else(|| corrupt(name))?;
    std::str::from_utf8(bytes).map_err(|_| corrupt(name))
}

fn number_field<T: std::str::FromStr>(
    fields: &impl Fields,
    name: &str,
) -> Result<Option<T>, StoreError> {
    match fields.field(name) {
        None => Ok(None),
        Some(_) => text_field(fields, name)?
            .parse::<T>()
            .map(Some)
            .map_err(|_| corrupt(name)),
    }
}

fn required<T: std::str::FromStr>(fields: &impl Fields, name: &str) -> Result<T, StoreError> {
    number_field(fields, name)?.ok_or_else(|| corrupt(name))
}

/// The enrollment's id: format 2's random `i`, else format 1's sequence in `f` (the scripts
/// compare the same field).
fn factor_id(fields: &impl Fields) -> Result<FactorId, StoreError> {
    match fields.field("i") {
        Some(bytes) => {
            let bytes: [u8; 16] = bytes.try_into().map_err(|_| corrupt("i"))?;
            Ok(FactorId::from_random(bytes))
        }
        None => Ok(FactorId::Legacy(required(fields, "f")?)),
    }
}

/// The fields `record_from` reads: what the check's read asks for (HMGET), so that the
/// recovery codes beside them stay in Redis.
pub(super) const FACTOR_FIELDS: [&str; 14] = [
    "v", "s", "i", "f", "a", "d", "p", "k", "l", "n", "u", "q", "c", "m",
];

/// How many recovery codes the hash holds: its `r:` fields.
pub(super) fn codes_held(fields: &HashMap<String, Vec<u8>>) -> Result<u32, StoreError> {
    let format = number_field::<i64>(fields, "v")?.unwrap_or(1);
    if format > FORMAT {
        return Err(StoreError::NewerFormat(format));
    }
    let held = fields.keys().filter(|name| name.starts_with("r:")).count();
    u32::try_from(held).map_err(|_| corrupt("r:"))
}

/// The user's failures and lock (`n`, `u`), whether or not a factor holds them.
pub(super) fn standing_of(
    fields: &HashMap<String, Vec<u8>>,
) -> Result<crate::domain::recovery::Standing, StoreError> {
    Ok(crate::domain::recovery::Standing {
        failures: number_field(fields, "n")?.unwrap_or(0),
        lock: number_field::<i64>(fields, "u")?.map(Lock::from_stored),
    })
}

/// The enrollment's parameters: `a`, `d` and `p`, or from format 4 on, when all three are
/// absent, `IMPLIED_PARAMS`. An earlier format without them is corrupt: its reader, an older
/// release, would refuse it too.
fn params_of(fields: &impl Fields, format: i64) -> Result<TotpParams, StoreError> {
    let named = ["a", "d", "p"].map(|name| fields.field(name).is_some());
    if format >= 4 && named == [false; 3] {
        return Ok(IMPLIED_PARAMS);
    }
    TotpParams::new(
        text_field(fields, "a")?.parse().map_err(|_| corrupt("a"))?,
        required(fields, "d")?,
        required(fields, "p")?,
    )
    .map_err(|_| corrupt("d or p"))
}

/// The user's hash as a record; `None` when it holds no factor (absent, or removed: only the
/// sequence is left).
pub(super) fn record_from(fields: &impl Fields) -> Result<Option<FactorRecord>, StoreError> {
    let format = number_field::<i64>(fields, "v")?.unwrap_or(1);
    if format > FORMAT {
        return Err(StoreError::NewerFormat(format));
    }
    let Some(state) = number_field::<u8>(fields, "s")? else {
        return Ok(None);
    };
    let state = FactorState::from_stored(state).ok_or_else(|| corrupt("s"))?;
    let params = params_of(fields, format)?;
    let last_step = number_field::<i64>(fields, "l")?.and_then(|step| u64::try_from(step).ok());
    Ok(Some(FactorRecord {
        factor_id: factor_id(fields)?,
        state,
        params,
        sealed_secret: fields
            .field("k")
            .map(<[u8]>::to_vec)
            .ok_or_else(|| corrupt("k"))?,
        last_step,
        failures: number_field(fields, "n")?.unwrap_or(0),
        lock: number_field::<i64>(fields, "u")?.map(Lock::from_stored),
        sequence: required(fields, "q")?,
        created_at: UnixMicros(required(fields, "c")?),
        changed_at: UnixMicros(required(fields, "m")?),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fields: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
        fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
            .collect()
    }

    const COMMON: &[(&str, &[u8])] = &[
        ("s", b"2"),
        ("a", b"SHA1"),
        ("d", b"6"),
        ("p", b"30"),
        ("k", b"sealed"),
        ("q", b"4"),
        ("c", b"1"),
        ("m", b"2"),
    ];

    #[test]
    fn reads_every_format_and_refuses_newer_ones() {
        let mut format1 = hash(COMMON);
        format1.insert("f".into(), b"3".to_vec());
        let record = record_from(&format1).unwrap().unwrap();
        assert_eq!(record.factor_id, FactorId::Legacy(3));

        let mut format2 = hash(COMMON);
        format2.insert("v".into(), b"2".to_vec());
        format2.insert("f".into(), b"3".to_vec());
        format2.insert("i".into(), vec![9; 16]);
        let record = record_from(&format2).unwrap().unwrap();
        assert_eq!(record.factor_id, FactorId::from_random([9; 16]));

        // Format 3 adds recovery-code fields, which the record leaves aside.
        format2.insert("v".into(), b"3".to_vec());
        format2.insert("r:k1:00ff".into(), b"1".to_vec());
        assert_eq!(record_from(&format2).unwrap(), Some(record.clone()));
        assert_eq!(codes_held(&format2).unwrap(), 1);

        // Format 4 names the parameters, or leaves the ones every app assumes out.
        format2.insert("v".into(), b"4".to_vec());
        assert_eq!(record_from(&format2).unwrap(), Some(record.clone()));
        let mut format4 = format2.clone();
        format4.insert("a".into(), b"SHA256".to_vec());
        assert_ne!(
            record_from(&format4).unwrap().unwrap().params,
            IMPLIED_PARAMS
        );
        for name in ["a", "d", "p"] {
            format4.remove(name);
        }
        assert_eq!(record_from(&format4).unwrap(), Some(record.clone()));
        assert_eq!(record.params, IMPLIED_PARAMS);
        assert_eq!(codes_held(&format4).unwrap(), 1);
        // Only all three are left out; and only from format 4 on.
        let mut partial = format4.clone();
        partial.insert("d".into(), b"8".to_vec());
        assert!(matches!(record_from(&partial), Err(StoreError::Corrupt(_))));
        format4.insert("v".into(), b"3".to_vec());
        assert!(matches!(record_from(&format4), Err(StoreError::Corrupt(_))));

        format2.insert("v".into(), b"5".to_vec());
        assert!(matches!(
            record_from(&format2),
            Err(StoreError::NewerFormat(5))
        ));
        assert!(matches!(
            codes_held(&format2),
            Err(StoreError::NewerFormat(5))
        ));

        let removed = hash(&[("q", b"5"), ("m", b"2")]);
        assert_eq!(record_from(&removed).unwrap(), None);
    }

    /// A read of `FACTOR_FIELDS` alone gives the same record as the whole hash.
    #[test]
    fn the_factor_fields_are_all_the_record_needs() {
        let mut full = hash(COMMON);
        for (name, value) in [
            ("v", b"3".as_slice()),
            ("i", &[9; 16]),
            ("f", b"3"),
            ("l", b"77"),
            ("n", b"2"),
            ("u", b"-1"),
            ("r:k1:00ff", b"1"),
        ] {
            full.insert(name.into(), value.to_vec());
        }
        // As the check's HMGET answers: FACTOR_FIELDS' values in order.
        let read = FactorFields(
            FACTOR_FIELDS
                .iter()
                .map(|name| full.get(*name).cloned())
                .collect(),
        );
        let present = read.0.iter().filter(|value| value.is_some()).count();
        assert_eq!(present, full.len() - 1, "every field but the code's");
        let record = record_from(&read).unwrap().unwrap();
        assert_eq!(record, record_from(&full).unwrap().unwrap());
        assert_eq!((record.last_step, record.failures), (Some(77), 2));
    }
}
