//! The `custops-segmentation` binary: configuration comes from the environment (see
//! `custops_common::config`), everything else from the library.

use std::process::ExitCode;

use custops_common::service::ServiceKind;

#[tokio::main]
async fn main() -> ExitCode {
    custops_common::bootstrap::run(ServiceKind::Segmentation, custops_segmentation::build).await
}
