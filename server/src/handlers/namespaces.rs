//! [`Namespaces`]: each room's options, by the longest matching prefix
//! (PROTOCOL.md, "Namespaces"), with the room handlers they name resolved.

use std::collections::HashMap;
use std::time::Duration;

use holdfast_actors::rooms::{HistoryLimits, RoomOptions};

use super::RoomHandler;
use crate::config::{ConfigError, NamespaceSettings, RoomSettings};

/// The options of the rooms under one prefix.
#[derive(Clone)]
pub(crate) struct Namespace {
    pub(crate) settings: NamespaceSettings,
    pub(crate) handler: Option<RoomHandler>,
    /// Its history, the `[rooms]` values where it sets none.
    pub(crate) history: HistoryLimits,
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
        rooms: &RoomSettings,
        handlers: &HashMap<String, RoomHandler>,
    ) -> Result<Self, ConfigError> {
        let mut prefixed = Vec::with_capacity(rooms.namespaces.len());
        for (i, ns) in rooms.namespaces.iter().enumerate() {
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
                history: history(rooms, ns),
            });
        }
        Ok(Self::of_namespaces(rooms, prefixed))
    }

    /// `prefixed`, the defaults and the system namespace.
    fn of_namespaces(rooms: &RoomSettings, mut prefixed: Vec<Namespace>) -> Self {
        for ns in &mut prefixed {
            if ns.settings.prefix.starts_with('$') {
                ns.settings.client_publish = false; // system rooms, whatever the file says
            }
        }
        let defaults = history(rooms, &NamespaceSettings::new(""));
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
                history: defaults,
            },
            system: Namespace {
                settings: system,
                handler: None,
                history: defaults,
            },
        }
    }

    /// The namespaces of `settings` alone, with no handler resolved: the
    /// options the room hubs apply (presence events), known before the
    /// application registers its handlers.
    pub(crate) fn options(rooms: &RoomSettings) -> Self {
        Self::of_namespaces(
            rooms,
            rooms
                .namespaces
                .iter()
                .map(|ns| Namespace {
                    settings: ns.clone(),
                    handler: None,
                    history: history(rooms, ns),
                })
                .collect(),
        )
    }

    /// The namespace of `room`.
    pub(crate) fn of(&self, room: &str) -> &Namespace {
        let fallback = match room.starts_with('$') {
            true => &self.system,
            false => &self.defaults,
        };
        self.prefixed
            .iter()
            .find(|ns| room.starts_with(ns.settings.prefix.as_str()))
            .unwrap_or(fallback)
    }
}

/// What the room hubs and the shared broker apply to each room.
impl RoomOptions for Namespaces {
    fn history(&self, room: &str) -> HistoryLimits {
        self.of(room).history
    }

    fn presence_events(&self, room: &str) -> bool {
        self.of(room).settings.presence_events
    }
}

/// `ns`'s history, the `[rooms]` values where it sets none.
fn history(rooms: &RoomSettings, ns: &NamespaceSettings) -> HistoryLimits {
    HistoryLimits {
        size: ns.history_size.unwrap_or(rooms.history_size),
        max_age: Duration::from_millis(ns.history_max_age_ms.unwrap_or(rooms.history_max_age_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(namespaces: Vec<NamespaceSettings>) -> RoomSettings {
        RoomSettings {
            namespaces,
            ..crate::config::Settings::defaults().rooms
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_dollar_rooms_are_the_systems() {
        let settings = vec![
            NamespaceSettings {
                client_publish: false,
                ..NamespaceSettings::new("chat:")
            },
            NamespaceSettings::new("chat:open:"),
        ];
        let ns = Namespaces::new(&rooms(settings), &HashMap::new()).unwrap();
        assert!(!ns.of("chat:7").settings.client_publish);
        assert!(ns.of("chat:open:1").settings.client_publish);
        assert_eq!(ns.of("lobby").settings.prefix, "");
        assert!(!ns.of("$trending").settings.client_publish);
    }

    #[test]
    fn a_dollar_namespace_sets_options_of_system_rooms_which_stay_read_only() {
        use crate::config::SlowConsumer;
        let ns = Namespaces::options(&rooms(vec![
            NamespaceSettings::new("$printers").slow_consumer(SlowConsumer::Latest)
        ]));
        let printers = &ns.of("$printers").settings;
        assert_eq!(printers.slow_consumer, SlowConsumer::Latest);
        assert!(!printers.client_publish);
        assert_eq!(ns.of("$files").settings.slow_consumer, SlowConsumer::Close);
        assert_eq!(ns.of("printers").settings.prefix, "");
        let mut settings = crate::config::Settings::defaults();
        settings.rooms.namespaces = vec![NamespaceSettings::new("$")];
        settings
            .rooms
            .validate()
            .expect("'$' alone: every system room");
        settings.rooms.namespaces = vec![NamespaceSettings::new("$bad/")];
        assert!(settings.rooms.validate().is_err());
    }

    #[test]
    fn an_unknown_handler_is_a_config_error_naming_its_key() {
        let settings = vec![
            NamespaceSettings::new("a:"),
            NamespaceSettings::new("chat:").handler("mod"),
        ];
        let Err(ConfigError::Key { key, message }) =
            Namespaces::new(&rooms(settings), &HashMap::new())
        else {
            panic!("accepted an unknown handler");
        };
        assert_eq!(key, "rooms.namespaces[1].handler");
        assert!(message.contains("'mod'"), "{message}");
    }

    #[test]
    fn a_namespace_history_overrides_the_rooms_defaults() {
        let ns = Namespaces::options(&rooms(vec![
            NamespaceSettings::new("feed:").history(0, 1000),
            NamespaceSettings {
                history_size: Some(5),
                ..NamespaceSettings::new("chat:")
            },
        ]));
        let d = crate::config::Settings::defaults().rooms;
        assert_eq!(ns.history("feed:1").size, 0);
        assert_eq!(ns.history("feed:1").max_age, Duration::from_secs(1));
        assert_eq!(ns.history("chat:1").size, 5);
        assert_eq!(
            ns.history("chat:1").max_age,
            Duration::from_millis(d.history_max_age_ms)
        );
        assert_eq!(ns.history("lobby").size, d.history_size);
        assert_eq!(ns.history("$files").size, d.history_size);
    }
}
