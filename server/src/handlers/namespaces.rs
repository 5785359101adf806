//! [`Namespaces`]: each room's options, by the longest matching prefix
//! (PROTOCOL.md, "Namespaces"), with the room handlers they name resolved.

use std::collections::HashMap;

use super::RoomHandler;
use crate::config::{ConfigError, NamespaceSettings};

/// The options of the rooms under one prefix.
#[derive(Clone)]
pub(crate) struct Namespace {
    pub(crate) settings: NamespaceSettings,
    pub(crate) handler: Option<RoomHandler>,
}

/// Every namespace; rooms matching none use the defaults, `$` rooms the
/// system namespace (read-only for clients).
#[derive(Clone)]
pub(crate) struct Namespaces {
    /// Longest prefix first.
    prefixed: Vec<Namespace>,
    defaults: Namespace,
    system: Namespace,
}

impl Namespaces {
    /// Resolves the handler each namespace names.
    ///
    /// # Errors
    /// A namespace names a handler nobody registered (the error names its key).
    pub(crate) fn new(
        settings: &[NamespaceSettings],
        handlers: &HashMap<String, RoomHandler>,
    ) -> Result<Self, ConfigError> {
        let mut prefixed = Vec::with_capacity(settings.len());
        for (i, ns) in settings.iter().enumerate() {
            let handler = match &ns.handler {
                None => None,
                Some(name) => Some(handlers.get(name).cloned().ok_or_else(|| {
                    let mut known: Vec<&str> = handlers.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    ConfigError::Key {
                        key: format!("rooms.namespaces[{i}].handler"),
                        message: format!(
                            "no room handler '{name}' is registered (registered: [{}])",
                            known.join(", ")
                        ),
                    }
                })?),
            };
            prefixed.push(Namespace {
                settings: ns.clone(),
                handler,
            });
        }
        Ok(Self::of_namespaces(prefixed))
    }

    /// `prefixed`, the defaults and the system namespace.
    fn of_namespaces(mut prefixed: Vec<Namespace>) -> Self {
        prefixed.sort_by_key(|ns| std::cmp::Reverse(ns.settings.prefix.len()));
        let system = NamespaceSettings {
            client_publish: false,
            ..NamespaceSettings::new("$")
        };
        Self {
            prefixed,
            defaults: Namespace {
                settings: NamespaceSettings::new(""),
                handler: None,
            },
            system: Namespace {
                settings: system,
                handler: None,
            },
        }
    }

    /// The namespaces of `settings` alone, with no handler resolved: the
    /// options the room hubs apply (presence events), known before the
    /// application registers its handlers.
    pub(crate) fn options(settings: &[NamespaceSettings]) -> Self {
        Self::of_namespaces(
            settings
                .iter()
                .map(|ns| Namespace {
                    settings: ns.clone(),
                    handler: None,
                })
                .collect(),
        )
    }

    /// The namespace of `room`.
    pub(crate) fn of(&self, room: &str) -> &Namespace {
        if room.starts_with('$') {
            return &self.system;
        }
        self.prefixed
            .iter()
            .find(|ns| room.starts_with(ns.settings.prefix.as_str()))
            .unwrap_or(&self.defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_and_dollar_rooms_are_the_systems() {
        let settings = vec![
            NamespaceSettings {
                client_publish: false,
                ..NamespaceSettings::new("chat:")
            },
            NamespaceSettings::new("chat:open:"),
        ];
        let ns = Namespaces::new(&settings, &HashMap::new()).unwrap();
        assert!(!ns.of("chat:7").settings.client_publish);
        assert!(ns.of("chat:open:1").settings.client_publish);
        assert_eq!(ns.of("lobby").settings.prefix, "");
        assert!(!ns.of("$trending").settings.client_publish);
    }

    #[test]
    fn an_unknown_handler_is_a_config_error_naming_its_key() {
        let settings = vec![
            NamespaceSettings::new("a:"),
            NamespaceSettings::new("chat:").handler("mod"),
        ];
        let Err(ConfigError::Key { key, message }) = Namespaces::new(&settings, &HashMap::new())
        else {
            panic!("accepted an unknown handler");
        };
        assert_eq!(key, "rooms.namespaces[1].handler");
        assert!(message.contains("'mod'"), "{message}");
    }
}
