//! The `custops-loyalty` binary refuses bad database configuration clearly.

#[tokio::test]
async fn bad_database_url_stops_the_binary_naming_the_variable() -> anyhow::Result<()> {
    custops_testkit::startup::assert_rejects_bad_database_url(env!("CARGO_BIN_EXE_custops-loyalty"))
        .await
}
