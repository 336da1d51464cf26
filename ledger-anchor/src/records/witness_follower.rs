//! Following a log's witnesses from its entries, in order: the genesis's set from size 0,
//! then each witness change of a governance entry the acceptance rule admits (chained, signed
//! by the threshold of governors in force), from the size that first contains it. The log
//! store, the monitor and a hospital checking its receipts all follow a log this way, so they
//! judge a checkpoint by the same witnesses as `verify`.

use super::{
    EnrolmentEntry, FederationEntry, GOVERNANCE_TYPE, Governance, Record, WitnessesRecord,
    validate_entry,
};

/// Of a schedule (what is in force from each size on, sizes ascending), what is in force for
/// a checkpoint of `size` entries: the last item starting at or below it.
pub fn in_force_at<T>(schedule: &[(u64, T)], size: u64) -> Option<&T> {
    schedule
        .iter()
        .rev()
        .find(|(from, _)| *from <= size)
        .map(|(_, t)| t)
}

/// The witness sets of a log read so far (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct WitnessFollower {
    next: u64,
    /// A v1 genesis's witnesses (v1 ledgers have no governance).
    v1: Option<Vec<(u64, WitnessesRecord)>>,
    /// A v2 genesis until its enrolments are read, and its witnesses meanwhile.
    genesis: Option<(Vec<u8>, FederationEntry, Vec<EnrolmentEntry>)>,
    genesis_witnesses: Vec<(u64, WitnessesRecord)>,
    governance: Option<Governance>,
}

impl WitnessFollower {
    /// The index of the next entry to read.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Every set in force at some size read so far, with the size it starts at, ascending.
    pub fn schedule(&self) -> &[(u64, WitnessesRecord)] {
        if let Some(v1) = &self.v1 {
            return v1;
        }
        self.governance
            .as_ref()
            .map_or(&self.genesis_witnesses, |g| g.witness_schedule())
    }

    /// The set a checkpoint of `size` entries is judged by (`None` before the genesis).
    pub fn policy_at(&self, size: u64) -> Option<&WitnessesRecord> {
        in_force_at(self.schedule(), size)
    }

    /// Reads the next entry (index [`Self::next_index`]) of the log of `origin`; true when it
    /// is a governance entry the acceptance rule admits. An entry that does not validate, or a
    /// governance entry the rule refuses, changes nothing (`verify` names it).
    pub fn read(&mut self, origin: &str, bytes: &[u8]) -> bool {
        // Past the genesis only governance entries can change a witness (and nothing can in a
        // v1 log). An entry's bytes are canonical JSON, so a governance entry holds its type
        // field verbatim: any other entry is passed over without being parsed.
        let genesis_read = self.v1.is_some() || self.governance.is_some();
        let field = format!("\"type\":\"{GOVERNANCE_TYPE}\"");
        // A substring search, not a comparison at every byte: a replica catching up reads
        // every entry here once.
        let holds_field = std::str::from_utf8(bytes).map_or_else(
            |_| bytes.windows(field.len()).any(|w| w == field.as_bytes()),
            |s| s.contains(&field),
        );
        if genesis_read && !holds_field {
            self.next += 1;
            return false;
        }
        let record = validate_entry(self.next, origin, bytes).ok();
        self.read_parsed(bytes, record.as_ref())
    }

    /// [`Self::read`] of an entry already validated (`None`: it did not validate).
    pub fn read_parsed(&mut self, bytes: &[u8], record: Option<&Record>) -> bool {
        let index = self.next;
        self.next += 1;
        let mut admitted = false;
        match record {
            Some(Record::V1Federation(g)) if index == 0 => {
                self.v1 = Some(vec![(0, g.witnesses.clone())]);
            }
            Some(Record::Federation(g)) if index == 0 => {
                self.genesis_witnesses = vec![(0, g.witnesses.clone())];
                self.genesis = Some((bytes.to_vec(), (**g).clone(), Vec::new()));
            }
            Some(Record::Enrolment(e)) => {
                if let Some((_, _, enrolments)) = &mut self.genesis {
                    enrolments.push((**e).clone());
                }
            }
            Some(Record::Governance(e)) => {
                if let Some(gov) = &mut self.governance {
                    admitted = gov.admit(index, bytes, e).is_ok();
                }
            }
            _ => {}
        }
        // The genesis ends with its last enrolment.
        if let Some((g_bytes, g, enrolments)) = &self.genesis
            && enrolments.len() as u64 == g.enrolments
            && self.governance.is_none()
        {
            let refs: Vec<&EnrolmentEntry> = enrolments.iter().collect();
            self.governance = Some(Governance::new(g_bytes, g, &refs));
        }
        admitted
    }
}
