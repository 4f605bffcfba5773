//! Intake (SPEC §3): the shipments of one job file checked against the
//! station's configuration and stored — queued, a duplicate, or refused with a
//! named reason. Shared by `jobs import` and the spool ([`super::spool`]).
//!
//! Parsing is all or nothing: a file is only imported when every shipment in
//! it parses, so a half-written JSON-lines file never loses its tail.

use crate::config::Config;
use crate::escape::Untrusted;
use crate::shipment::{parse_stream, IntakeRefusal, JobContent, Shipment, ShipmentId};
use crate::station::policy::Intake;
use crate::store::{Imported, Store, StoreError};
use std::fmt;

/// What importing one file did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: usize,
    pub duplicate: usize,
    pub refused: usize,
    /// Each refusal, in file order.
    pub refusals: Vec<Refused>,
}

impl ImportCounts {
    /// Adds `other`'s counts and refusals to these.
    pub fn add(&mut self, other: ImportCounts) {
        self.imported += other.imported;
        self.duplicate += other.duplicate;
        self.refused += other.refused;
        self.refusals.extend(other.refusals);
    }
}

/// One refused shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The id as it came (untrusted: print it through [`Untrusted`], as
    /// `Display` does).
    pub shipment_id: String,
    pub refusal: IntakeRefusal,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The refusal's own text escapes the untrusted parts it quotes.
        write!(
            f,
            "refused {}: {}",
            Untrusted(&self.shipment_id),
            self.refusal
        )
    }
}

/// Why a file was not imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("not a shipment or JSON lines of shipments (line {line}, column {column})")]
    Json { line: usize, column: usize },
}

/// Parses a whole job file: one shipment, or JSON lines of them. Any line that
/// fails (a truncated last line included) fails the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<Shipment>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8)?;
    parse_stream(text).map_err(|e| ParseError::Json {
        line: e.line(),
        column: e.column(),
    })
}

/// Checks and stores `shipments` (SPEC §3). Refusals are logged (escaped),
/// recorded in the store and returned; only a store failure is an error (what
/// was stored before it stays; a re-import finds those as duplicates).
pub fn import_shipments(
    store: &Store,
    config: &Config,
    shipments: Vec<Shipment>,
) -> Result<ImportCounts, StoreError> {
    let profiles = crate::profile::builtin();
    let intake = Intake {
        profiles: &profiles,
        customizations: &config.customizations,
    };
    let mut counts = ImportCounts::default();
    for s in shipments {
        let outcome = match (s.validate(&intake), ShipmentId::parse(&s.shipment_id)) {
            (Ok(job), _) => store.import(&job)?,
            (Err(refusal), Ok(id)) => store.import_refused(&id, &JobContent::from(&s), &refusal)?,
            // An id that breaks the grammar never becomes a row key: the
            // refusal goes to the audit trail only.
            (Err(refusal), Err(_)) => {
                store.record_bad_shipment_id(&refusal)?;
                Imported::Refused(refusal)
            }
        };
        match outcome {
            Imported::New => counts.imported += 1,
            Imported::Duplicate => counts.duplicate += 1,
            Imported::Refused(refusal) => {
                tracing::warn!(
                    shipment = %Untrusted(&s.shipment_id),
                    code = refusal.code(),
                    "refused at intake: {refusal}"
                );
                counts.refused += 1;
                counts.refusals.push(Refused {
                    shipment_id: s.shipment_id,
                    refusal,
                });
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_last_line_fails_the_whole_file() {
        let one = r#"{"shipment_id":"S1","shipment_items":[]}"#;
        assert_eq!(
            parse(format!("{one}\n{one}\n").as_bytes()).unwrap().len(),
            2
        );
        let cut = format!("{one}\n{}", &one[..20]);
        assert!(matches!(
            parse(cut.as_bytes()),
            Err(ParseError::Json { line: 2, .. })
        ));
        assert!(matches!(parse(b"\xff{}"), Err(ParseError::NotUtf8)));
    }

    #[test]
    fn a_refusal_prints_the_id_escaped() {
        let r = Refused {
            shipment_id: "a\r\nX\x1b[2J".into(),
            refusal: IntakeRefusal::ShipmentId(crate::escape::untrusted("a\r\nX\x1b[2J")),
        };
        let text = r.to_string();
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.contains("intake.shipment_id"));
    }
}
