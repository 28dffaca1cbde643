//! `tether send` and `tether history`: one REST call each.

use crate::args::{History, Send};
use crate::{Failure, api_for, credentials};

pub async fn send(a: Send) -> Result<(), Failure> {
    let api = api_for(&a.login)?;
    let creds = credentials(&api, &a.login).await?;
    let message = api
        .post_message(&creds.access_token, &a.channel, &a.text)
        .await
        .map_err(|e| Failure::api("send failed", &e))?;
    println!("{message}");
    Ok(())
}

pub async fn history(a: History) -> Result<(), Failure> {
    let api = api_for(&a.login)?;
    let creds = credentials(&api, &a.login).await?;
    let page = api
        .messages(&creds.access_token, &a.channel, None, a.limit)
        .await
        .map_err(|e| Failure::api("history failed", &e))?;
    for item in page.items.iter().rev() {
        if a.json {
            println!("{}", item.json());
        } else {
            let v: serde_json::Value =
                serde_json::from_str(item.json().as_str()).unwrap_or_default();
            let author = v["author"]["username"].as_str().unwrap_or("?");
            let at = v["created_at"].as_str().unwrap_or("");
            let text = v["content"].as_str().unwrap_or("");
            println!("{at}  {author}: {text}");
        }
    }
    Ok(())
}
