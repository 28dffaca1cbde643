//! Uploads as Kaiku's `chat/uploads.rs` makes them: the message row first, the file after.
//!
//! Kaiku inserts an upload's message (its `created_at` fixed then) before it stores the file,
//! and broadcasts `message_new` only once the file is stored and attached: seconds later, or
//! never if storage fails. Meanwhile history already has the message, without its
//! attachment.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Shared;
use crate::kaiku_events::ServerEvent;

/// When an upload's `message_new` goes out ([`DevServer::post_upload`]).
///
/// [`DevServer::post_upload`]: crate::DevServer::post_upload
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadBroadcast {
    /// The file is stored this long after the message: then it is attached to the stored
    /// message and `message_new` carrying it is broadcast.
    After(Duration),
    /// Storing the file failed: the message stays in history without it, and no
    /// `message_new` is ever sent.
    Never,
}

/// Kaiku's `AttachmentInfo` for `filename`: the required `id`, `filename`, `mime_type`,
/// `size` and `url` (its download route), the image fields null.
pub(crate) fn attachment(id: &str, filename: &str) -> Value {
    let mime = match filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
    {
        Some(ext) if ext == "png" => "image/png",
        Some(ext) if ext == "jpg" || ext == "jpeg" => "image/jpeg",
        Some(ext) if ext == "gif" => "image/gif",
        Some(ext) if ext == "txt" => "text/plain",
        Some(ext) if ext == "pdf" => "application/pdf",
        _ => "application/octet-stream",
    };
    json!({
        "id": id,
        "filename": filename,
        "mime_type": mime,
        "size": 4096,
        "url": format!("/api/messages/attachments/{id}/download"),
        "blurhash": null,
        "width": null,
        "height": null,
        "thumbnail_url": null,
        "medium_url": null,
    })
}

/// Stores the message now (visible in history, `attachments: []`, not broadcast), then
/// attaches the file and broadcasts as `broadcast` says. `None` for an unknown user or
/// channel.
pub(crate) fn post_upload(
    shared: &Arc<Shared>,
    channel_id: &str,
    username: &str,
    content: &str,
    filename: &str,
    broadcast: UploadBroadcast,
) -> Option<String> {
    let mut store = shared.store();
    let author = store.user_by_name(username)?.id.clone();
    let m = store.post(channel_id, &author, content)?;
    let attachment = attachment(&store.new_id(), filename);
    drop(store);
    let UploadBroadcast::After(delay) = broadcast else {
        return Some(m.id);
    };
    let (shared, id) = (shared.clone(), m.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut store = shared.store();
        // Deleted meanwhile: Kaiku's attach would fail, and nothing is broadcast.
        let Some(m) = store.attach(&id, attachment) else {
            return;
        };
        let frame = ServerEvent::MessageNew {
            channel_id: m.channel_id.clone(),
            message: store.message_json(&m),
        };
        drop(store);
        shared.broadcast(&m.channel_id, &frame.to_json());
    });
    Some(m.id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::UploadBroadcast;
    use crate::ServerConfig;
    use crate::testkit::{Ws, get, server_with_user};

    #[tokio::test]
    async fn an_upload_is_in_history_at_once_and_broadcast_with_its_file_later() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let ch = server.create_channel("general");
        let mut ws = Ws::connect(server.addr(), &token).await;
        assert_eq!(ws.event().await["type"], "ready");
        ws.subscribe(&ch).await;
        let delay = Duration::from_millis(400);
        let id = server
            .post_upload(
                &ch,
                "alice",
                "a cat",
                "cat.png",
                UploadBroadcast::After(delay),
            )
            .expect("upload");
        let history = format!("/api/messages/channel/{ch}");
        let page = get(server.addr(), &history, &token).await.json();
        assert_eq!(page["items"][0]["id"], id.as_str());
        assert_eq!(page["items"][0]["attachments"], serde_json::json!([]));
        assert_eq!(ws.recv_within(delay / 2).await, None, "not broadcast yet");

        let e = ws.event_of("message_new").await;
        assert_eq!(e["message"]["id"], id.as_str());
        let attachment = &e["message"]["attachments"][0];
        assert_eq!(attachment["filename"], "cat.png");
        assert_eq!(attachment["mime_type"], "image/png");
        for field in ["id", "size", "url"] {
            assert!(!attachment[field].is_null(), "{field}");
        }
        let page = get(server.addr(), &history, &token).await.json();
        assert_eq!(&page["items"][0]["attachments"][0], attachment);
        assert_eq!(
            page["items"][0]["created_at"], e["message"]["created_at"],
            "stamped when stored, not when broadcast"
        );
    }

    #[tokio::test]
    async fn an_upload_whose_file_fails_is_never_broadcast_and_keeps_no_attachment() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let ch = server.create_channel("general");
        let mut ws = Ws::connect(server.addr(), &token).await;
        ws.subscribe(&ch).await;
        let id = server
            .post_upload(&ch, "alice", "lost", "big.bin", UploadBroadcast::Never)
            .expect("upload");
        server.post(&ch, "alice", "plain").expect("post");
        let plain = ws.event_of("message_new").await;
        assert_eq!(
            plain["message"]["content"], "plain",
            "the upload never came"
        );
        assert_eq!(plain["message"]["attachments"], serde_json::json!([]));
        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}"),
            &token,
        )
        .await
        .json();
        assert_eq!(page["items"][1]["id"], id.as_str());
        assert_eq!(page["items"][1]["attachments"], serde_json::json!([]));
    }
}
