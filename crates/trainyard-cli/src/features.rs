//! `trainyard models features` (a page of a sparse autoencoder's features, or one feature with
//! its top contexts) and `trainyard models encode` (a text's tokens and their features).

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use crate::encoding::segment;
use crate::remote::{Client, ClientError, print};

#[derive(Args)]
pub struct FeaturesArgs {
    model: String,
    /// Show this feature with its top activating contexts instead of a page of features.
    #[arg(long)]
    index: Option<usize>,
    /// The layer (default: the first trained).
    #[arg(long)]
    layer: Option<usize>,
    /// index, frequency or max_activation.
    #[arg(long, default_value = "frequency")]
    sort: String,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

#[derive(Args)]
pub struct EncodeArgs {
    model: String,
    #[arg(long)]
    text: String,
    #[arg(long)]
    layer: Option<usize>,
    /// Features shown per token.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

pub async fn features(client: &Client, out: &str, args: FeaturesArgs) -> Result<(), ClientError> {
    let layer = args.layer.map(|l| format!("layer={l}"));
    let model = segment(&args.model);
    let path = match args.index {
        Some(index) => format!(
            "/api/models/{model}/features/{index}?{}",
            layer.unwrap_or_default()
        ),
        None => format!(
            "/api/models/{model}/features?sort={}&limit={}&offset={}{}",
            segment(&args.sort),
            args.limit,
            args.offset,
            layer.map(|l| format!("&{l}")).unwrap_or_default()
        ),
    };
    let answer = client.request(Method::GET, &path, None).await?;
    print(out, &answer, |a| {
        if a.get("items").is_some() {
            print_page(a)
        } else {
            print_feature(a)
        }
    });
    Ok(())
}

fn print_page(page: &Value) {
    println!(
        "layer {}: {} features, {} never fired",
        page["layer"], page["total"], page["dead"]
    );
    println!(
        "{:>7} {:>11} {:>15} {:>13}",
        "index", "frequency", "max_activation", "decoder_norm"
    );
    for item in page["items"].as_array().into_iter().flatten() {
        println!(
            "{:>7} {:>11.5} {:>15.4} {:>13.4}",
            item["index"].as_u64().unwrap_or_default(),
            item["frequency"].as_f64().unwrap_or(f64::NAN),
            item["max_activation"].as_f64().unwrap_or(f64::NAN),
            item["decoder_norm"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

fn print_feature(feature: &Value) {
    println!(
        "feature {} of layer {}: fires on {:.3}% of tokens, up to {:.3}",
        feature["index"],
        feature["layer"],
        100.0 * feature["frequency"].as_f64().unwrap_or(0.0),
        feature["max_activation"].as_f64().unwrap_or(0.0)
    );
    for context in feature["top_contexts"].as_array().into_iter().flatten() {
        let text = |key: &str| {
            context[key]
                .as_str()
                .unwrap_or_default()
                .replace('\n', "\\n")
        };
        println!(
            "{:>8.3}  {}[[{}]]{}",
            context["activation"].as_f64().unwrap_or(0.0),
            text("before"),
            text("token"),
            text("after")
        );
    }
    for row in feature["top_rows"].as_array().into_iter().flatten() {
        println!(
            "{:>8.3}  row {}",
            row["activation"].as_f64().unwrap_or(0.0),
            row["row"]
        );
    }
    let promoted: Vec<String> = feature["promoted_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{:?}", t["token"].as_str().unwrap_or_default()))
        .collect();
    if !promoted.is_empty() {
        println!("promotes: {}", promoted.join(" "));
    }
}

pub async fn encode(client: &Client, out: &str, args: EncodeArgs) -> Result<(), ClientError> {
    let answer = client
        .request(
            Method::POST,
            &format!("/api/models/{}/encode", segment(&args.model)),
            Some(json!({"text": args.text, "layer": args.layer, "top": args.top})),
        )
        .await?;
    print(out, &answer, |a| {
        for token in a["tokens"].as_array().into_iter().flatten() {
            let features: Vec<String> = token["features"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{}:{:.2}",
                        f["index"],
                        f["activation"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!(
                "{:>6} {:>4} active  {}",
                format!("{:?}", token["token"].as_str().unwrap_or_default()),
                token["active"].as_u64().unwrap_or_default(),
                features.join(" ")
            );
        }
    });
    Ok(())
}
