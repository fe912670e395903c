//! `meshctl services` and `meshctl members`.

use super::{ApiClient, CliError, Format, table};

pub async fn services(api: &ApiClient, format: Format) -> Result<i32, CliError> {
    let v = api.get_json("/v1/catalog/services").await?;
    table::print(&v, format, |v| {
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
        table::render(&["Service", "Tags"], &rows)
    });
    Ok(0)
}

pub async fn members(api: &ApiClient, format: Format) -> Result<i32, CliError> {
    let v = api.get_json("/v1/agent/members").await?;
    table::print(&v, format, |v| {
        let rows = table::rows(v, |m| {
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
                table::text(&m["Name"]),
                table::text(&m["Addr"]),
                status.to_string(),
                role.to_string(),
                table::text(&m["Tags"]["dc"]),
            ]
        });
        table::render(&["Node", "Address", "Status", "Type", "DC"], &rows)
    });
    Ok(0)
}
