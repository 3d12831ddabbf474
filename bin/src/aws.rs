//! Where a command's AWS clients point: the flags every command that calls
//! AWS takes (as the AWS CLI names them), and the SDK configuration they
//! make.

use clap::Args;

/// Where the AWS clients point, as the AWS CLI takes it.
#[derive(Args, Debug, Clone)]
pub struct AwsArgs {
    /// Send every request to this endpoint (for example the local stack's).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
}

impl AwsArgs {
    pub async fn config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        loader.load().await
    }
}
