//! Identifier newtypes. On the Mesos v1 wire an id is `{"value": "..."}`; the state
//! endpoints use plain strings. We write the v1 object and accept either form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                IdRef { value: &self.0 }.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = IdWire::deserialize(d)?;
                let v = match raw {
                    IdWire::Plain(s) => s,
                    IdWire::Object { value } => value,
                };
                if v.is_empty() {
                    return Err(serde::de::Error::custom(concat!(stringify!($name), " must not be empty")));
                }
                if v.len() > 255 || v.chars().any(|c| c.is_control() || c == '/') {
                    return Err(serde::de::Error::custom(concat!(
                        stringify!($name),
                        " must be at most 255 characters with no '/' or control characters"
                    )));
                }
                Ok(Self(v))
            }
        }
    };
}

#[derive(Serialize)]
struct IdRef<'a> {
    value: &'a str,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdWire {
    Plain(String),
    Object { value: String },
}

id_type!(
    /// An agent, minted by the master as `<master-id>-S<n>`.
    AgentId
);
id_type!(
    /// A framework, minted by the master as `<master-id>-<nnnn>`; kept across failover.
    FrameworkId
);
id_type!(
    /// A task, chosen by its framework.
    TaskId
);
id_type!(
    /// An offer, minted by the master as `<master-id>-O<n>`.
    OfferId
);
id_type!(
    /// An executor; for command tasks it equals the task id.
    ExecutorId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_write_v1_objects_and_read_both_forms() {
        let id = TaskId::new("web.1");
        assert_eq!(
            serde_json::to_string(&id).ok(),
            Some(r#"{"value":"web.1"}"#.to_owned())
        );
        let a: Result<TaskId, _> = serde_json::from_str(r#""web.1""#);
        let b: Result<TaskId, _> = serde_json::from_str(r#"{"value":"web.1"}"#);
        assert_eq!(a.ok(), Some(id.clone()));
        assert_eq!(b.ok(), Some(id));
    }

    #[test]
    fn empty_or_slashed_ids_are_rejected() {
        assert!(serde_json::from_str::<TaskId>(r#""""#).is_err());
        assert!(serde_json::from_str::<TaskId>(r#""../x""#).is_err());
    }
}
