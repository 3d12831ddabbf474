//! State machine definitions from the same text `template.yaml` deploys: a
//! state machine resource's definition (`DefinitionUri` file, inline
//! `Definition`, or `DefinitionString`) with its `DefinitionSubstitutions`
//! applied, the substitutions' intrinsics (`!Ref`, `!GetAtt`, `!Sub`)
//! resolved against the local stack (functions by their binary name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::Error;
use crate::proxy::ACCOUNT;

/// What can be wrong with a template or one of its state machines.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path} has no resource {logical_id}")]
    NoResource { path: PathBuf, logical_id: String },
    #[error(
        "resource {logical_id} is a {found}, not a state machine (AWS::Serverless::StateMachine or AWS::StepFunctions::StateMachine)"
    )]
    NotStateMachine { logical_id: String, found: String },
    #[error(
        "state machine {logical_id} has no definition: set DefinitionUri (a local file), Definition or DefinitionString"
    )]
    NoDefinition { logical_id: String },
    #[error("state machine {logical_id}: {message}")]
    Unsupported { logical_id: String, message: String },
    #[error(
        "state machine {logical_id}: ${{{name}}} in the definition has no value in DefinitionSubstitutions"
    )]
    Unsubstituted { logical_id: String, name: String },
    #[error("state machine {logical_id}: the definition is not valid JSON after substitution")]
    Json {
        logical_id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the local stack runs, for ARNs the intrinsics resolve to.
#[derive(Clone, Debug)]
pub struct Context {
    pub region: String,
    pub account: String,
    /// Values for `!Ref` / `!GetAtt` of logical ids the stack can't derive
    /// (a bucket name, a parameter); `Name` for `!Ref Name`, `Name.Attr` for
    /// `!GetAtt Name.Attr`.
    pub values: BTreeMap<String, String>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            region: "us-east-1".to_owned(),
            account: ACCOUNT.to_owned(),
            values: BTreeMap::new(),
        }
    }
}

/// A state machine as the template deploys it.
#[derive(Clone, Debug)]
pub struct StateMachine {
    pub logical_id: String,
    /// The definition text, substitutions applied (valid JSON).
    pub definition: String,
}

/// Reads state machine `logical_id` out of the template at `template`.
pub fn load(
    template: &Path,
    logical_id: &str,
    context: &Context,
) -> Result<StateMachine, TemplateError> {
    let root = read_template(template)?;
    let resources = &root["Resources"];
    let resource = resources
        .get(logical_id)
        .ok_or_else(|| TemplateError::NoResource {
            path: template.to_path_buf(),
            logical_id: logical_id.to_owned(),
        })?;
    let kind = resource["Type"].as_str().unwrap_or_default();
    if kind != "AWS::Serverless::StateMachine" && kind != "AWS::StepFunctions::StateMachine" {
        return Err(TemplateError::NotStateMachine {
            logical_id: logical_id.to_owned(),
            found: kind.to_owned(),
        });
    }
    let resolver = Resolver {
        root: &root,
        context,
        logical_id,
    };
    let properties = &resource["Properties"];
    let definition = if let Some(uri) = properties.get("DefinitionUri") {
        let Some(file) = uri.as_str() else {
            return Err(resolver.unsupported(
                "DefinitionUri must be a local file path (S3 locations are not read)",
            ));
        };
        let path = template.parent().unwrap_or(Path::new(".")).join(file);
        std::fs::read_to_string(&path).map_err(|source| TemplateError::Read { path, source })?
    } else if let Some(inline) = properties.get("Definition") {
        serde_json::to_string(inline).map_err(|source| TemplateError::Json {
            logical_id: logical_id.to_owned(),
            source,
        })?
    } else if let Some(string) = properties.get("DefinitionString") {
        resolver.string(string)?
    } else {
        return Err(TemplateError::NoDefinition {
            logical_id: logical_id.to_owned(),
        });
    };
    let mut substitutions = BTreeMap::new();
    if let Some(Value::Mapping(map)) = properties.get("DefinitionSubstitutions") {
        for (name, value) in map {
            let Some(name) = name.as_str() else { continue };
            substitutions.insert(name.to_owned(), resolver.string(value)?);
        }
    }
    let definition =
        substitute(&definition, |name| substitutions.get(name).cloned()).map_err(|name| {
            TemplateError::Unsubstituted {
                logical_id: logical_id.to_owned(),
                name,
            }
        })?;
    serde_json::from_str::<serde_json::Value>(&definition).map_err(|source| {
        TemplateError::Json {
            logical_id: logical_id.to_owned(),
            source,
        }
    })?;
    Ok(StateMachine {
        logical_id: logical_id.to_owned(),
        definition,
    })
}

/// Creates the state machine in the local stack's Step Functions and returns
/// its ARN.
pub async fn create(
    client: &aws_sdk_sfn::Client,
    name: &str,
    machine: &StateMachine,
) -> Result<String, Error> {
    let output = client
        .create_state_machine()
        .name(name)
        .definition(&machine.definition)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/local-state-machine"))
        .send()
        .await
        .map_err(|source| Error::CreateStateMachine {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    Ok(output.state_machine_arn().to_owned())
}

/// Starts execution `name` of `machine` with `input` and polls it until it
/// is no longer running (at most `limit`); returns how it ended, whatever
/// that is (the caller judges the status).
pub async fn execute(
    client: &aws_sdk_sfn::Client,
    machine: &str,
    name: &str,
    input: &str,
    limit: std::time::Duration,
) -> Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput, Error> {
    fn failed<E: std::error::Error + Send + Sync + 'static>(
        name: &str,
        doing: &'static str,
    ) -> impl FnOnce(E) -> Error {
        move |source| Error::Execution {
            name: name.to_owned(),
            doing,
            source: Box::new(source),
        }
    }
    let execution = client
        .start_execution()
        .state_machine_arn(machine)
        .name(name)
        .input(input)
        .send()
        .await
        .map_err(failed(name, "start"))?;
    let started = std::time::Instant::now();
    loop {
        let described = client
            .describe_execution()
            .execution_arn(execution.execution_arn())
            .send()
            .await
            .map_err(failed(name, "describe"))?;
        if *described.status() != aws_sdk_sfn::types::ExecutionStatus::Running {
            return Ok(described);
        }
        if started.elapsed() >= limit {
            return Err(Error::ExecutionTimedOut {
                name: name.to_owned(),
                limit,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Replaces each `${Name}` through `lookup`; `${!Literal}` keeps `${Literal}`
/// as CloudFormation does. Fails with the first name without a value.
fn substitute(
    text: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else {
            out.push_str(&lookup(name).ok_or_else(|| name.to_owned())?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Resolver<'a> {
    root: &'a Value,
    context: &'a Context,
    logical_id: &'a str,
}

impl Resolver<'_> {
    fn unsupported(&self, message: &str) -> TemplateError {
        TemplateError::Unsupported {
            logical_id: self.logical_id.to_owned(),
            message: message.to_owned(),
        }
    }

    /// A substitution value: a plain scalar or one intrinsic, short or long form.
    fn string(&self, value: &Value) -> Result<String, TemplateError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                self.intrinsic(tag.trim_start_matches('!'), &tagged.value)
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (key, inner) = map.iter().next().expect("one entry");
                let key = key.as_str().unwrap_or_default();
                self.intrinsic(key.trim_start_matches("Fn::"), inner)
            }
            _ => {
                Err(self
                    .unsupported("a substitution value must be a scalar, !Ref, !GetAtt or !Sub"))
            }
        }
    }

    fn intrinsic(&self, name: &str, argument: &Value) -> Result<String, TemplateError> {
        match name {
            "Ref" => self.reference(argument.as_str().unwrap_or_default(), None),
            "GetAtt" => {
                let (resource, attribute) = match argument {
                    Value::String(s) => s.split_once('.').unwrap_or((s.as_str(), "")),
                    Value::Sequence(items) if items.len() == 2 => (
                        items[0].as_str().unwrap_or_default(),
                        items[1].as_str().unwrap_or_default(),
                    ),
                    _ => return Err(self.unsupported("!GetAtt takes Resource.Attribute")),
                };
                self.reference(resource, Some(attribute))
            }
            "Sub" => {
                let (text, variables) = match argument {
                    Value::String(s) => (s.as_str(), None),
                    Value::Sequence(items) if items.len() == 2 => {
                        (items[0].as_str().unwrap_or_default(), Some(&items[1]))
                    }
                    _ => return Err(self.unsupported("!Sub takes a string or [string, variables]")),
                };
                let mut failed = None;
                let result = substitute(text, |name| {
                    let local = variables.and_then(|v| v.get(name));
                    let value = match local {
                        Some(value) => self.string(value),
                        None => match name.split_once('.') {
                            Some((resource, attribute)) => {
                                self.reference(resource, Some(attribute))
                            }
                            None => self.reference(name, None),
                        },
                    };
                    value.map_err(|error| failed = Some(error)).ok()
                });
                match (result, failed) {
                    (_, Some(error)) => Err(error),
                    (Ok(text), None) => Ok(text),
                    (Err(name), None) => {
                        Err(self.unsupported(&format!("!Sub: no value for ${{{name}}}")))
                    }
                }
            }
            other => Err(self.unsupported(&format!(
                "intrinsic {other} is not supported in substitutions"
            ))),
        }
    }

    /// `!Ref name` (attribute `None`) or `!GetAtt name.attribute`.
    fn reference(&self, name: &str, attribute: Option<&str>) -> Result<String, TemplateError> {
        let context = self.context;
        let key = match attribute {
            Some(attribute) => format!("{name}.{attribute}"),
            None => name.to_owned(),
        };
        if let Some(value) = context.values.get(&key) {
            return Ok(value.clone());
        }
        match name {
            "AWS::Region" => return Ok(context.region.clone()),
            "AWS::AccountId" => return Ok(context.account.clone()),
            "AWS::Partition" => return Ok("aws".to_owned()),
            "AWS::StackName" => return Ok("local".to_owned()),
            _ => {}
        }
        if let Some(parameter) = self.root["Parameters"].get(name)
            && let Some(default) = parameter.get("Default")
        {
            return self.string(default);
        }
        let resource = &self.root["Resources"][name];
        if resource["Type"].as_str() == Some("AWS::Serverless::Function")
            && matches!(attribute, None | Some("Arn"))
        {
            // Served by cargo lambda under its binary's name (the SAM
            // cargo-lambda build names it in BuildProperties.Binary).
            let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .ok_or_else(|| self.unsupported(&format!("function {name} has no Metadata.BuildProperties.Binary to run it by locally")))?;
            return Ok(match attribute {
                Some(_) => format!(
                    "arn:aws:lambda:{}:{}:function:{binary}",
                    context.region, context.account
                ),
                None => binary.to_owned(),
            });
        }
        Err(self.unsupported(&format!(
            "no local value for {key}: pass it in Context::values"
        )))
    }
}

/// The template at `template`, parsed.
fn read_template(template: &Path) -> Result<Value, TemplateError> {
    let text = std::fs::read_to_string(template).map_err(|source| TemplateError::Read {
        path: template.to_path_buf(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| TemplateError::Parse {
        path: template.to_path_buf(),
        source,
    })
}

/// The `Default` of template parameter `name` (a number or a string, as
/// text): what a stack deployed with no overrides uses.
pub fn parameter_default(template: &Path, name: &str) -> Result<Option<String>, TemplateError> {
    let root = read_template(template)?;
    Ok(
        match root["Parameters"].get(name).and_then(|p| p.get("Default")) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_names_and_keeps_escaped_literals() {
        let lookup = |name: &str| (name == "A").then(|| "x".to_owned());
        assert_eq!(substitute("${A}-${!B}-$", lookup).unwrap(), "x-${B}-$");
        assert_eq!(substitute("${C}", lookup).unwrap_err(), "C");
    }

    #[test]
    fn resolves_intrinsics_in_substitutions() {
        let dir = std::env::temp_dir().join(format!("rewind-sm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("def.json"), r#"{"Comment":"${Fn} ${Bucket} ${Arn}","StartAt":"S","States":{"S":{"Type":"Succeed"}}}"#).unwrap();
        std::fs::write(
            dir.join("template.yaml"),
            r#"
Parameters:
  Prefix: {Type: String, Default: pre}
Resources:
  Echo:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: echo}}
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: def.json
      DefinitionSubstitutions:
        Fn: !GetAtt Echo.Arn
        Bucket: !Ref Bucket
        Arn: !Sub "arn:${AWS::Partition}:s3:::${Prefix}-${AWS::AccountId}"
  Other:
    Type: AWS::S3::Bucket
"#,
        )
        .unwrap();
        let mut context = Context::default();
        context.values.insert("Bucket".into(), "b".into());
        let machine = load(&dir.join("template.yaml"), "Machine", &context).unwrap();
        let json: serde_json::Value = serde_json::from_str(&machine.definition).unwrap();
        assert_eq!(
            json["Comment"],
            "arn:aws:lambda:us-east-1:123456789012:function:echo b arn:aws:s3:::pre-123456789012"
        );
        assert!(matches!(
            load(&dir.join("template.yaml"), "Other", &context),
            Err(TemplateError::NotStateMachine { .. })
        ));
        assert!(matches!(
            load(&dir.join("template.yaml"), "Machine", &Context::default()),
            Err(TemplateError::Unsupported { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
