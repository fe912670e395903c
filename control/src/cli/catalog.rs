//! `meshctl services` and `meshctl members`.

use super::{ApiClient, CliError, Format, table};

pub async fn services(api: &ApiClient, format: Format) -> Result<i32, CliError> {
    let v = api.get_json("/v1/catalog/services").await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, tags)| {
            let tags: Vec<&str> = tags
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            vec![name.clone(), tags.join(",")]
        })
        .collect();
    println!("{}", table::render(&["Service", "Tags"], &rows));
    Ok(0)
}

pub async fn members(api: &ApiClient, format: Format) -> Result<i32, CliError> {
    let v = api.get_json("/v1/agent/members").await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let status = match m["Status"].as_u64() {
                Some(1) => "alive",
                Some(4) => "failed",
                _ => "unknown",
            };
            let role = match m["Tags"]["role"].as_str() {
                Some("consul") => "server",
                _ => "client",
            };
            vec![
                m["Name"].as_str().unwrap_or_default().to_string(),
                m["Addr"].as_str().unwrap_or_default().to_string(),
                status.to_string(),
                role.to_string(),
                m["Tags"]["dc"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["Node", "Address", "Status", "Type", "DC"], &rows)
    );
    Ok(0)
}
