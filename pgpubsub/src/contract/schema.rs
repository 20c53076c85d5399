//! pgpubsub's own tables and functions, as append-only schema steps kept in
//! `schema/NNNN_{up,down}.sql`.
//!
//! A released step is frozen: its text never changes (a test pins each
//! step's SHA-256, and `pgpubsub-gen` refuses a migrations directory whose
//! recorded step differs from this version's). A new pgpubsub version adds
//! steps; it may replace a function, never drop the notification table.

/// One step of pgpubsub's own schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStep {
    /// A stable key (`schema/0001`).
    pub key: &'static str,
    /// What the step creates.
    pub up: &'static str,
    /// How to undo it.
    pub down: &'static str,
    /// A function the step creates, as `to_regprocedure` spells it, or a
    /// table (a name without parentheses), that no later step drops: the
    /// listener checks it to tell a database that lacks this step.
    pub marker: &'static str,
}

/// Every step, in order.
pub const STEPS: &[SchemaStep] = &[
    SchemaStep {
        key: "schema/0001",
        up: include_str!("schema/0001_up.sql"),
        down: include_str!("schema/0001_down.sql"),
        marker: "pgpubsub_notification_claim(text, text, bigint, bigint)",
    },
    SchemaStep {
        key: "schema/0002",
        up: include_str!("schema/0002_up.sql"),
        down: include_str!("schema/0002_down.sql"),
        marker: "pgpubsub_row_check(anyelement, jsonb)",
    },
    SchemaStep {
        key: "schema/0003",
        up: include_str!("schema/0003_up.sql"),
        down: include_str!("schema/0003_down.sql"),
        // Its lease functions are replaced by step 0004.
        marker: "pgpubsub_listener",
    },
    SchemaStep {
        key: "schema/0004",
        up: include_str!("schema/0004_up.sql"),
        down: include_str!("schema/0004_down.sql"),
        marker: "pgpubsub_notification_lease_take(text, text, bigint, bigint, double precision, integer)",
    },
    SchemaStep {
        key: "schema/0005",
        up: include_str!("schema/0005_up.sql"),
        down: include_str!("schema/0005_down.sql"),
        marker: "pgpubsub_notification_lease_batch(bigint[], bigint, boolean, text, text, bigint, bigint, double precision, integer)",
    },
];

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::STEPS;

    /// The SHA-256 of every released step's `up` and `down`. A released step
    /// never changes: to change the schema, add a step.
    const RELEASED: &[(&str, &str, &str)] = &[
        (
            "schema/0001",
            "7a58f02d68e2df134e5d996bb23ad24414568d85870c6d723f5ac3ca9ab92b67",
            "0fc2b27c530f8e66b58d0ed447d57fe5feddaec3f2393236d35e4e650f2c43c5",
        ),
        (
            "schema/0002",
            "3149f0a5640d6da48fb6f9559fc0eb57bf077bdb8184d97b36039d5668fbba0b",
            "188d22ae4d07ec2d1bf6e163f8464415bb202ac68fb3179435ef05bf7b8df5be",
        ),
        (
            "schema/0003",
            "6524dc46624ad6153d3d470fad64e8764d136b89ef52418e392da556137b0a07",
            "9b0c15c794e9b0130b3421ea3074e69a7a3c5803036e8abfa1a3b2e826e6afa6",
        ),
        (
            "schema/0004",
            "f66d69f3f66fc34a928172410527a3c41b63ca2d05389e3041356c35d2f96c78",
            "b3934736cf7646235b1e7de13a797812d894942153edcf4cc160e7f22e4fb1ac",
        ),
        (
            "schema/0005",
            "4a8b4ebf5fc87f70de510b8732c04827e7b55d06106379752676de6f6753eb5f",
            "8aed125ef8ed797f5cccb05a060be24fff3f6c96f7fe27d3959d1f482536413e",
        ),
    ];

    fn sha256(text: &str) -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    #[test]
    fn released_steps_are_frozen() {
        for (key, up, down) in RELEASED {
            let step = STEPS
                .iter()
                .find(|step| step.key == *key)
                .unwrap_or_else(|| panic!("released step {key} was removed"));
            assert_eq!(
                sha256(step.up),
                *up,
                "{key}/up changed: released steps are frozen, add a new step instead"
            );
            assert_eq!(
                sha256(step.down),
                *down,
                "{key}/down changed: released steps are frozen, add a new step instead"
            );
        }
    }

    #[test]
    fn step_keys_are_sequential() {
        for (index, step) in STEPS.iter().enumerate() {
            assert_eq!(step.key, format!("schema/{:04}", index + 1));
            assert!(step
                .up
                .contains(step.marker.split('(').next().unwrap_or_default()));
        }
    }
}
