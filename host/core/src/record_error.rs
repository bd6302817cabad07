//! What is wrong with one node or profile record, naming the record, the field and the
//! value: said by the checks of a whole inventory and by the typed reading of each record.

/// Whether a record is a node or a profile: profiles may not carry node-only fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Node,
    Profile,
}

impl RecordKind {
    pub fn noun(self) -> &'static str {
        match self {
            RecordKind::Node => "node",
            RecordKind::Profile => "profile",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} `{id}`: `{field}` = {value:?}: {reason}", .kind.noun())]
pub struct ValidationError {
    pub kind: RecordKind,
    /// The node or profile name.
    pub id: String,
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl ValidationError {
    /// The record as messages name it: `node `n001`` or `profile `default``.
    pub fn record(&self) -> String {
        format!("{} `{}`", self.kind.noun(), self.id)
    }
}
