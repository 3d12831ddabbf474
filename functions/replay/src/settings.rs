//! The replay function's settings, read once per container from the
//! environment (failing fast with the variable's name and what it accepts):
//!
//! - `REPLAY_ACCOUNT_ID` (required) and `REPLAY_PARTITION` (default `aws`),
//!   with the region (the SDK's, else `AWS_REGION`, else `us-east-1`): the
//!   `eventSourceARN` of records replayed from the archive is
//!   `arn:<partition>:kinesis:<region>:<account>:stream/<stream>`, and target
//!   streams named without an ARN are in this account.
//! - `REPLAY_INVOKE_IDENTITY_ARN`: the events' `invokeIdentityArn` when the
//!   request's target names none (default: empty).
//! - `REPLAY_MAX_ATTEMPTS` (default 5): attempts per AWS request.
//! - `REPLAY_DYNAMODB` (`true`/`false`, default `false`): whether requests
//!   may read the DynamoDB archive (the stack sets it when it has a table).

use rewind_function::settings::{SettingError, flag, number, required, text};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub account_id: String,
    pub partition: String,
    /// The region when the SDK's configuration has none.
    pub region: String,
    pub invoke_identity_arn: String,
    pub max_attempts: u32,
    pub dynamodb: bool,
}

impl Settings {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let account_id = required(
            &var,
            "REPLAY_ACCOUNT_ID",
            "the account of the replayed streams",
        )?;
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SettingError::invalid(
                "REPLAY_ACCOUNT_ID",
                account_id,
                "an AWS account id of 12 digits",
            ));
        }
        Ok(Self {
            account_id,
            partition: text(&var, "REPLAY_PARTITION", "aws"),
            region: text(&var, "AWS_REGION", "us-east-1"),
            invoke_identity_arn: text(&var, "REPLAY_INVOKE_IDENTITY_ARN", ""),
            max_attempts: number(&var, "REPLAY_MAX_ATTEMPTS", 5, 1..=20)? as u32,
            dynamodb: flag(&var, "REPLAY_DYNAMODB")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use rewind_function::settings::vars;

    use super::*;

    #[test]
    fn defaults_and_settings() {
        let defaults = Settings::from_env(vars(&[("REPLAY_ACCOUNT_ID", "123456789012")])).unwrap();
        assert_eq!(
            defaults,
            Settings {
                account_id: "123456789012".into(),
                partition: "aws".into(),
                region: "us-east-1".into(),
                invoke_identity_arn: String::new(),
                max_attempts: 5,
                dynamodb: false,
            }
        );
        let set = Settings::from_env(vars(&[
            ("REPLAY_ACCOUNT_ID", "123456789012"),
            ("REPLAY_PARTITION", "aws-cn"),
            ("AWS_REGION", "cn-north-1"),
            (
                "REPLAY_INVOKE_IDENTITY_ARN",
                "arn:aws-cn:iam::123456789012:role/r",
            ),
            ("REPLAY_MAX_ATTEMPTS", "8"),
            ("REPLAY_DYNAMODB", "true"),
        ]))
        .unwrap();
        assert_eq!(set.partition, "aws-cn");
        assert_eq!(set.region, "cn-north-1");
        assert_eq!(
            set.invoke_identity_arn,
            "arn:aws-cn:iam::123456789012:role/r"
        );
        assert_eq!(set.max_attempts, 8);
        assert!(set.dynamodb);
    }

    #[test]
    fn bad_settings_name_the_variable_and_the_accepted_values() {
        let account = ("REPLAY_ACCOUNT_ID", "123456789012");
        let cases = [
            (
                vec![],
                "environment variable REPLAY_ACCOUNT_ID is required: the account of the replayed streams",
            ),
            (
                vec![("REPLAY_ACCOUNT_ID", "")],
                "environment variable REPLAY_ACCOUNT_ID is required",
            ),
            (
                vec![("REPLAY_ACCOUNT_ID", "1234")],
                "REPLAY_ACCOUNT_ID is \"1234\"; accepted values: an AWS account id of 12 digits",
            ),
            (
                vec![account, ("REPLAY_DYNAMODB", "yes")],
                "REPLAY_DYNAMODB is \"yes\"; accepted values: true, false",
            ),
            (
                vec![account, ("REPLAY_MAX_ATTEMPTS", "0")],
                "REPLAY_MAX_ATTEMPTS is \"0\"; accepted values: a whole number from 1 to 20",
            ),
        ];
        for (vars_set, expected) in cases {
            let err = Settings::from_env(vars(&vars_set)).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
