// Typed wrappers for tauri-plugin-tether. The types in ./bindings are generated from the Rust
// types (a Rust test fails when they drift).

import { Channel, invoke } from "@tauri-apps/api/core";
import { listen, type Event, type UnlistenFn } from "@tauri-apps/api/event";

import type {
  ClientEvent,
  ConnectOptions,
  Error as TetherError,
  HistoryResult,
  LoginResult,
  RateLimitedPayload,
  ResyncedPayload,
  Status,
  SubscriptionRejectedPayload,
  VoiceResetPayload,
} from "./bindings";

export * from "./bindings";

const cmd = (name: string) => `plugin:tether|${name}`;

/**
 * Connects. When already connected to the same server, adds the channels and keeps the
 * connection (a reloaded page calls this again), unless the session has failed or the options
 * bring other credentials (another token or user, or a `login` since): then it reconnects
 * with them. Plain `http://` to a host that is not loopback is refused (`kind: "insecure"`)
 * unless `allow_insecure` is set.
 */
export function connect(options: ConnectOptions): Promise<Status> {
  return invoke<Status>(cmd("connect"), { options });
}

/** Closes the connection. */
export function disconnect(): Promise<void> {
  return invoke(cmd("disconnect"));
}

/** Wants a channel's events, now and after every reconnect. */
export function subscribe(channelId: string, newestMessageId?: string): Promise<void> {
  return invoke(cmd("subscribe"), { channelId, newestMessageId: newestMessageId ?? null });
}

/** Stops wanting a channel. */
export function unsubscribe(channelId: string): Promise<void> {
  return invoke(cmd("unsubscribe"), { channelId });
}

/** The app is looking at this channel: after a reconnect its catch-up goes first. */
export function focus(channelId: string): Promise<void> {
  return invoke(cmd("focus"), { channelId });
}

/**
 * The network may have changed: probes a live link now (a ping with a 5 s deadline) and skips
 * a pending backoff wait (not a wait the server asked for). Does nothing without a connection.
 * The plugin already calls it when this page goes `online` or becomes visible again (see
 * `watchNetwork`); call it for signals of your own.
 */
export function networkChanged(): Promise<void> {
  return invoke(cmd("network_changed"));
}

/**
 * Turns the plugin's network watch off (`false`) or back on (`true`) for this page. By default
 * a script the plugin adds to every page calls `networkChanged()` whenever the page goes
 * `online` or becomes visible again, so a laptop back on Wi-Fi reconnects at once rather than
 * after a backoff step. A reloaded page starts with it on again.
 */
export function watchNetwork(enabled: boolean): void {
  const watch = (globalThis as { __TETHER_NETWORK__?: { watch: boolean } }).__TETHER_NETWORK__;
  if (watch) watch.watch = enabled;
}

/** Sends a client event (typing, status, voice, ...). */
export function send(event: ClientEvent): Promise<void> {
  return invoke(cmd("send"), { event });
}

/** The current connection status. */
export function status(): Promise<Status> {
  return invoke<Status>(cmd("status"));
}

/** Options of {@link login}. */
export interface LoginOptions {
  /**
   * Allow plain `http://` to a host that is not loopback (default `false`): the password then
   * crosses the network readable. Without it such a server is refused (`kind: "insecure"`)
   * before the password is sent. Loopback is always allowed.
   */
  allowInsecure?: boolean;
  /**
   * The proxy, as `connect`'s `proxy` option: a URL (`http://`, `socks5h://`, `socks5://`),
   * `"none"` or `"system"` (the default). Give `connect` the same one.
   */
  proxy?: string;
}

/** Logs in over REST; `connect({ server })` then uses these credentials. */
export function login(
  server: string,
  username: string,
  password: string,
  options: LoginOptions = {},
): Promise<LoginResult> {
  return invoke<LoginResult>(cmd("login"), {
    server,
    username,
    password,
    allowInsecure: options.allowInsecure ?? null,
    proxy: options.proxy ?? null,
  });
}

/** Logs out and closes the connection. */
export function logout(): Promise<void> {
  return invoke(cmd("logout"));
}

/** A page of a channel's history, newest first. */
export function history(channelId: string, before?: string, limit?: number): Promise<HistoryResult> {
  return invoke<HistoryResult>(cmd("history"), { channelId, before: before ?? null, limit: limit ?? null });
}

/** One event as the plugin emits it. */
export interface TetherEvent {
  event: string;
  payload: unknown;
}

/** The high-rate path: every event arrives in batches on one channel instead of `emit`. */
export async function attachChannel(onBatch: (events: TetherEvent[]) => void): Promise<Channel<TetherEvent[]>> {
  const channel = new Channel<TetherEvent[]>();
  channel.onmessage = onBatch;
  await invoke(cmd("attach_channel"), { channel });
  return channel;
}

/** Payloads of the events tether adds or defines; `ws:<type>` server events carry the server's JSON. */
export interface TetherEventPayloads {
  "ws:status": Status;
  "ws:connecting": null;
  "ws:connected": null;
  "ws:disconnected": null;
  "ws:reconnecting": number;
  "ws:resynced": ResyncedPayload;
  "ws:subscription_rejected": SubscriptionRejectedPayload;
  "ws:voice_reset": VoiceResetPayload;
  "ws:send_dropped": ClientEvent;
  "ws:rate_limited": RateLimitedPayload;
}

/** A server event: `{"type": "...", ...}` exactly as the server sent it. */
export type ServerEvent = { type: string } & Record<string, unknown>;

/** Listens to one of tether's own events with its typed payload. */
export function onTether<K extends keyof TetherEventPayloads>(
  name: K,
  handler: (payload: TetherEventPayloads[K]) => void,
): Promise<UnlistenFn> {
  return listen<TetherEventPayloads[K]>(name, (e: Event<TetherEventPayloads[K]>) => handler(e.payload));
}

/** Listens to a server event type (`message_new`, `typing_start`, or one the server invents). */
export function onServer(type: string, handler: (event: ServerEvent) => void): Promise<UnlistenFn> {
  return listen<ServerEvent>(`ws:${type}`, (e: Event<ServerEvent>) => handler(e.payload));
}

/** Whether a thrown value is a tether command error. */
export function isTetherError(e: unknown): e is TetherError {
  return typeof e === "object" && e !== null && "kind" in e && "message" in e;
}
