//! PostgreSQL: the wire protocol (sans-IO messages and one tokio adapter), server-side
//! SCRAM-SHA-256 for vigil's own users, the upstream connection vigil opens to a target, the
//! front end (`front.rs`: TLS, authentication, target), the session relay with its policy checks
//! and extended-protocol tracking (`session.rs`), and the value masker (`masker.rs`).
//!
//! Invariant: nothing here prints a password, a SCRAM key or a cancel secret; they live in
//! types whose `Debug` says `<secret>`.

pub mod front;
pub mod hold;
pub mod masker;
pub mod pool;
pub mod scram;
pub mod session;
pub mod upstream;
pub mod wire;

/// A value that must not reach logs: `Debug` prints `<secret>`. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "<secret>");
        assert_eq!(s.expose(), "hunter2");
    }
}
