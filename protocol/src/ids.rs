//! Identifiers that cross the wire: nodes, actors, topics and requests.
//!
//! Every id validates on construction *and* on decode (`serde(try_from)`), so a value of
//! one of these types is always well formed, wherever it came from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// Longest node name (a DNS label, so that pod names fit).
pub const MAX_NODE_NAME_LEN: usize = 63;
/// Longest actor kind.
pub const MAX_KIND_LEN: usize = 64;
/// Longest actor key.
pub const MAX_KEY_LEN: usize = 256;
/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which id.
        what: &'static str,
    },
    /// The value was too long.
    #[error("{what} is {len} bytes long; the limit is {max}: use a shorter {what}")]
    TooLong {
        /// Which id.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value had a character that is not allowed.
    #[error("{what} contains {ch:?} at byte {at}; allowed are {allowed}")]
    BadChar {
        /// Which id.
        what: &'static str,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
        /// A human description of the allowed set.
        allowed: &'static str,
    },
    /// An actor id without the `kind/key` separator.
    #[error("actor id {0:?} has no '/': write it as KIND/KEY, for example order/1234")]
    NoSeparator(String),
}

fn check(
    what: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    // Every allowed set is ASCII, so a byte-wise pass decides (a non-ASCII byte always
    // fails); only a refusal walks the characters, to name the offending one.
    if s.bytes().all(|b| b.is_ascii() && ok(char::from(b))) {
        return Ok(());
    }
    if let Some((at, ch)) = s.char_indices().find(|&(_, c)| !ok(c)) {
        return Err(IdError::BadChar {
            what,
            ch,
            at,
            allowed,
        });
    }
    Ok(())
}

/// Checks `s` against the node-name/actor-kind rules (`[A-Za-z0-9._-]`, 1 to `max` bytes).
pub(crate) fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    check(what, s, max, NAME_CHARS, name_char)
}

const NAME_CHARS: &str = "ASCII letters, digits, '-', '_' and '.'";
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}
const KEY_CHARS: &str = "printable ASCII without spaces (0x21..=0x7e)";
fn key_char(c: char) -> bool {
    c.is_ascii_graphic()
}

/// A cluster member: its stable name plus the incarnation of this run.
///
/// The incarnation grows on every start of a process under the same name, so a restarted
/// node is a *new* member and traffic from an older incarnation can be refused.
///
/// ```
/// use cortex_protocol::NodeId;
/// let a = NodeId::new("cortex-0", 7).unwrap();
/// assert_eq!(a.to_string(), "cortex-0#7");
/// assert!(NodeId::new("bad name", 1).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawNodeId")]
pub struct NodeId {
    // Inline up to 23 bytes, shared past that: a router clones the owner's id for every
    // message it sends, and a `String` made that a heap allocation each time.
    name: SmolStr,
    incarnation: u64,
}

#[derive(Deserialize)]
struct RawNodeId {
    name: SmolStr,
    incarnation: u64,
}

impl TryFrom<RawNodeId> for NodeId {
    type Error = IdError;
    fn try_from(raw: RawNodeId) -> Result<Self, IdError> {
        NodeId::new(raw.name, raw.incarnation)
    }
}

impl NodeId {
    /// Builds a node id, checking the name (1 to 63 of `[A-Za-z0-9._-]`).
    ///
    /// # Errors
    /// [`IdError`] naming the first problem with `name`.
    pub fn new(name: impl AsRef<str>, incarnation: u64) -> Result<Self, IdError> {
        let name = name.as_ref();
        check("node name", name, MAX_NODE_NAME_LEN, NAME_CHARS, name_char)?;
        Ok(Self {
            name: SmolStr::new(name),
            incarnation,
        })
    }
    /// The stable name (a pod name on Kubernetes).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The incarnation of this run; larger is newer.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    /// True when `other` is the same name with a newer incarnation.
    pub fn is_superseded_by(&self, other: &NodeId) -> bool {
        self.name == other.name && other.incarnation > self.incarnation
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.incarnation)
    }
}

/// A virtual actor's address: `kind/key`, for example `order/1234`.
///
/// The kind names a registered actor type (1 to 64 of `[A-Za-z0-9._-]`); the key is
/// 1 to 256 printable ASCII characters and may itself contain `/`.
///
/// ```
/// use cortex_protocol::ActorId;
/// let id: ActorId = "order/1234".parse().unwrap();
/// assert_eq!(id.kind(), "order");
/// assert_eq!(id.key(), "1234");
/// assert!("order".parse::<ActorId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawActorId")]
pub struct ActorId {
    // Inline up to 23 bytes, shared past that: decoding or cloning a typical id allocates
    // nothing. Hashes, compares and serializes exactly like the `String`s it replaced, so
    // ring placement and the wire are unchanged.
    kind: SmolStr,
    key: SmolStr,
}

#[derive(Deserialize)]
struct RawActorId {
    kind: SmolStr,
    key: SmolStr,
}

impl TryFrom<RawActorId> for ActorId {
    type Error = IdError;
    fn try_from(raw: RawActorId) -> Result<Self, IdError> {
        ActorId::from_parts(raw.kind, raw.key)
    }
}

impl ActorId {
    /// Builds an actor id from its kind and key.
    ///
    /// ```
    /// use cortex_protocol::ActorId;
    /// let id = ActorId::new("order", "1234").unwrap();
    /// assert_eq!(id.to_string(), "order/1234");
    /// assert!(ActorId::new("order", "").is_err());
    /// ```
    ///
    /// # Errors
    /// [`IdError`] naming the first problem.
    pub fn new(kind: impl AsRef<str>, key: impl AsRef<str>) -> Result<Self, IdError> {
        Self::from_parts(SmolStr::new(kind), SmolStr::new(key))
    }
    fn from_parts(kind: SmolStr, key: SmolStr) -> Result<Self, IdError> {
        check("actor kind", &kind, MAX_KIND_LEN, NAME_CHARS, name_char)?;
        check("actor key", &key, MAX_KEY_LEN, KEY_CHARS, key_char)?;
        Ok(Self { kind, key })
    }
    /// The registered kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The key within the kind.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl FromStr for ActorId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (kind, key) = s
            .split_once('/')
            .ok_or_else(|| IdError::NoSeparator(s.chars().take(80).collect()))?;
        ActorId::new(kind, key)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.key)
    }
}

/// A pub-sub topic (1 to 256 printable ASCII characters).
///
/// ```
/// use cortex_protocol::TopicId;
/// assert!(TopicId::new("prices.eur").is_ok());
/// assert!(TopicId::new("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SmolStr")]
pub struct TopicId(SmolStr);

impl TryFrom<SmolStr> for TopicId {
    type Error = IdError;
    fn try_from(s: SmolStr) -> Result<Self, IdError> {
        TopicId::checked(s)
    }
}

impl TopicId {
    /// Builds a topic id.
    ///
    /// # Errors
    /// [`IdError`] naming the first problem.
    pub fn new(name: impl AsRef<str>) -> Result<Self, IdError> {
        Self::checked(SmolStr::new(name))
    }
    fn checked(name: SmolStr) -> Result<Self, IdError> {
        check("topic", &name, MAX_TOPIC_LEN, KEY_CHARS, key_char)?;
        Ok(Self(name))
    }
    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        TopicId::new(s)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Correlates an ask with its reply on one connection. Chosen by the asker, unique per
/// connection while the ask is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

/// A stable message-type name, such as `bank.Deposit` (1 to 128 of `[A-Za-z0-9._:-]`).
///
/// ```
/// use cortex_protocol::MessageName;
/// assert!(MessageName::new("bank.Deposit").is_ok());
/// assert!(MessageName::new("no spaces").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SmolStr")]
pub struct MessageName(SmolStr);

/// Longest message-type name.
pub const MAX_MESSAGE_NAME_LEN: usize = 128;

impl TryFrom<SmolStr> for MessageName {
    type Error = IdError;
    fn try_from(s: SmolStr) -> Result<Self, IdError> {
        MessageName::checked(s)
    }
}

impl MessageName {
    /// Builds a message name.
    ///
    /// # Errors
    /// [`IdError`] naming the first problem.
    pub fn new(name: impl AsRef<str>) -> Result<Self, IdError> {
        Self::checked(SmolStr::new(name))
    }
    fn checked(name: SmolStr) -> Result<Self, IdError> {
        check(
            "message name",
            &name,
            MAX_MESSAGE_NAME_LEN,
            "ASCII letters, digits, '.', '_', ':' and '-'",
            |c| name_char(c) || c == ':',
        )?;
        Ok(Self(name))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_id_rules() {
        assert!(ActorId::new("order", "a/b").is_ok());
        assert!(matches!(
            ActorId::new("or der", "1"),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            ActorId::new("k", "x".repeat(257)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(ActorId::new("", "1"), Err(IdError::Empty { .. })));
        let id: ActorId = "user/alice@example.com".parse().unwrap();
        assert_eq!(id.to_string(), "user/alice@example.com");
    }

    #[test]
    fn node_supersede() {
        let a = NodeId::new("n", 1).unwrap();
        let b = NodeId::new("n", 2).unwrap();
        assert!(a.is_superseded_by(&b));
        assert!(!b.is_superseded_by(&a));
    }
}
