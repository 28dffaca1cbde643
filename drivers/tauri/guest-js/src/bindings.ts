// Generated from the Rust types by `tauri_plugin_tether::typescript_bindings()`.
// Do not edit: `cargo test -p tauri-plugin-tether` fails when this file drifts.

export type JsonValue = number | string | boolean | Array<JsonValue> | { [key in string]: JsonValue } | null;

export type Status = { "status": "disconnected" } | { "status": "connecting", 
/**
 * Retry number (0 = first try).
 */
attempt: number, } | { "status": "connected", 
/**
 * What the socket's 101 selected: v1 (today's Kaiku) or v2 and its encoding.
 */
protocol: Protocol, 
/**
 * permessage-deflate as agreed; `null` when the socket is not compressed.
 */
compression: Deflate | null, } | { "status": "reconnecting", 
/**
 * Retry number, from 1.
 */
attempt: number, 
/**
 * Time until the retry, in milliseconds.
 */
retry_in_ms: number, 
/**
 * Why the link was lost.
 */
reason: ReconnectReason, 
/**
 * What the driver could say about it, for the user: the proxy's answer, say.
 */
detail?: string, } | { "status": "failed", 
/**
 * Why.
 */
reason: FailReason, 
/**
 * The HTTP status of the refused upgrade, when that is what ended it.
 */
http_status?: number, 
/**
 * What the driver could say about it, for the user: the issuer of a certificate
 * that is not trusted, say.
 */
detail?: string, };

export type Protocol = { 
/**
 * 1: today's Kaiku protocol (one JSON object per text frame). 2: batches, and
 * MessagePack when `encoding` says so.
 */
version: number, 
/**
 * How frames are encoded.
 */
encoding: Encoding, };

export type Encoding = "json" | "msgpack";

export type Deflate = { 
/**
 * The server compresses with at most a 2^bits byte window.
 */
server_max_window_bits: number, 
/**
 * The server compresses each message alone.
 */
server_no_context_takeover: boolean, 
/**
 * The window the client may compress with (the client does not compress).
 */
client_max_window_bits: number, 
/**
 * The client compresses each message alone (the client does not compress).
 */
client_no_context_takeover: boolean, };

export type ReconnectReason = "connection_lost" | "server_closed" | "heartbeat_timeout" | "handshake_timeout" | "ready_timeout" | "connect_failed" | "tls_error" | "name_lookup" | "proxy_unreachable" | "proxy_refused" | "server_unavailable" | "rate_limited" | "message_too_large" | "protocol_error" | "refresh_failed" | "no_echo";

export type FailReason = "auth" | "forbidden" | "rejected" | "policy" | "subprotocol" | "extension" | "proxy_auth" | "certificate";

export type ClientEvent = { "type": "ping" } | { "type": "subscribe", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "unsubscribe", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "typing", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "stop_typing", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "voice_join", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "voice_leave", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "voice_answer", 
/**
 * Channel id.
 */
channel_id: string, 
/**
 * Session description.
 */
sdp: string, } | { "type": "voice_ice_candidate", 
/**
 * Channel id.
 */
channel_id: string, 
/**
 * The candidate line.
 */
candidate: string, } | { "type": "voice_mute", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "voice_unmute", 
/**
 * Channel id.
 */
channel_id: string, } | { "type": "set_status", 
/**
 * The status.
 */
status: string, } | { "type": "set_activity", 
/**
 * The activity object, passed through as given.
 */
activity: JsonValue, } | { "type": "set_custom_status", 
/**
 * The custom status object, passed through as given.
 */
custom_status: JsonValue, };

export type ResyncedPayload = { 
/**
 * The channel.
 */
channel_id: string, 
/**
 * Messages the catch-up delivered that had not arrived live.
 */
recovered: number, 
/**
 * False: reload the channel.
 */
complete: boolean, };

export type SubscriptionRejectedPayload = { 
/**
 * The channel.
 */
channel_id: string, 
/**
 * The server's code (`channel_not_found`, `forbidden`).
 */
code: string, };

export type VoiceResetPayload = { 
/**
 * The voice channel to re-establish.
 */
channel_id: string, };

export type RateLimitedPayload = { 
/**
 * Milliseconds until catch-up reads resume; `null` once they have.
 */
retry_in_ms: number | null, 
/**
 * Channels whose catch-up waits.
 */
waiting: number, };

export type StatusOrder = "tether" | "kaiku";

export type KaikuStatus = "disconnected" | "connecting" | "connected" | { "reconnecting": { 
/**
 * The retry number, from 1.
 */
attempt: number, } };

export type ConnectOptions = { 
/**
 * HTTP base URL of the server (`https://chat.example.com`).
 */
server: string, 
/**
 * `"subprotocol"` (default, current Kaiku) or `"query"` (older servers).
 */
auth_mode?: string, 
/**
 * An access token; or give `username` and `password`; or call `login` first. On a
 * session to the same server, a token other than the session's replaces its
 * credentials and reconnects.
 */
token?: string, 
/**
 * Log in with this user. On a session to the same server, another user (or any user
 * after the session failed) logs in again and reconnects.
 */
username?: string, 
/**
 * Password for `username`.
 */
password?: string, 
/**
 * Channels to subscribe to at once.
 */
channels?: Array<string>, 
/**
 * Allow plain `http://`/`ws://` to a host that is not loopback (default `false`).
 * Without it such a server is refused (`kind: "insecure"`) before the password or token
 * is sent, because anyone on the path could read them. Loopback is always allowed.
 */
allow_insecure?: boolean, 
/**
 * Offer permessage-deflate (default `false`): the server may then compress what it
 * sends, which a v2 dev server does. Costs about 22 KiB of memory while connected, for
 * the socket's inflate context (docs/protocol.md, "Compression").
 */
compression?: boolean, 
/**
 * The order of the legacy status events: `"tether"` (default) or `"kaiku"`, the order
 * Kaiku's desktop client emitted them in (`ws:disconnected` at a loss, `ws:reconnecting`
 * as each retry opens, never `ws:connecting` on a retry; see `StatusOrder`). Given on a
 * live session, it applies from its next event.
 */
status_order?: StatusOrder, 
/**
 * The proxy for the REST calls and the socket alike: `"http://[user:pass@]host:port"`
 * (HTTP CONNECT), `"socks5h://..."` (SOCKS5, the proxy resolves names), `"socks5://..."`,
 * `"none"`, or `"system"` (the default: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`,
 * else the system's settings on macOS and Windows). A proxy that is down or refuses
 * shows in `ws:status` (`proxy_unreachable`, `proxy_refused`, `proxy_auth`); it is never
 * gone around. Replaces `network`'s proxy when both are given.
 */
proxy?: string, };

export type LoginResult = { 
/**
 * `GET /auth/me` of the logged-in user.
 */
user: Record<string, unknown>, };

export type HistoryResult = { 
/**
 * Message objects as the server sent them.
 */
items: Array<Record<string, unknown>>, 
/**
 * Whether older messages exist.
 */
has_more: boolean, 
/**
 * Pass as `before` for the next older page.
 */
next_cursor: string | null, };

export type Error = { 
/**
 * What kind.
 */
kind: ErrorKind, 
/**
 * One readable line (never a token).
 */
message: string, };

export type ErrorKind = "invalid_argument" | "auth" | "network" | "name_lookup" | "proxy_unreachable" | "proxy_refused" | "proxy_auth" | "certificate" | "tls" | "server" | "not_connected" | "offline" | "queue_full" | "closed" | "busy" | "insecure";
