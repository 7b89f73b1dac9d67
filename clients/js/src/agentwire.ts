// agentwire client SDK: one WebSocket per client with authentication by ticket
// or subprotocol token, automatic reconnect with exponential backoff and full
// jitter, resume from the last seq/epoch, dedupe by seq, and sendMessage()
// resolving with a run handle; REST helpers for threads, messages and runs;
// devLogin(), publish() and publishBatch(). The wire contract is PROTOCOL.md (agentwire.v1).
// No runtime dependencies: the browser's or Node 22's WebSocket is used, and
// on Node 20 the `ws` package when it is installed (or options.WebSocket).

/** The subprotocol and version this client speaks. */
export const PROTOCOL = "agentwire.v1";

// ---------------------------------------------------------------------------
// Frames from the server (PROTOCOL.md section 4).

/** First frame of every connection. */
export interface ConnectionEstablishedFrame {
  type: "connection_established";
  connection_id: string;
  user_id: string;
  protocol: string;
  epoch: string;
  head_seq: number;
  heartbeat_interval_ms: number;
  max_message_bytes: number;
}

/** Fields every stream event carries. */
export interface StreamEventBase<T extends string, D> {
  type: T;
  seq: number;
  epoch: string;
  /** RFC 3339, UTC. */
  ts: string;
  thread_id?: string;
  run_id?: string;
  data: D;
}

export interface UserMessageData {
  message_id: string;
  content: string;
  client_message_id?: string;
}
export interface AgentStartedData {
  agent: string;
  /** The run's OpenTelemetry trace id (32 hex digits), when the server traces. */
  trace_id?: string;
}
export interface AgentThinkingData {
  text: string;
}
export interface ToolExecutingData {
  tool_call_id: string;
  tool: string;
  args: Record<string, unknown>;
}
export interface ToolCompletedData {
  tool_call_id: string;
  tool: string;
  ok: boolean;
  result: unknown;
  duration_ms: number;
  error?: string;
}
/** How far a running tool call has come (between its tool_executing and tool_completed). */
export interface ToolProgressData {
  tool_call_id: string;
  progress: number;
  total?: number;
  message?: string;
}
/** Tokens a run's model calls used, summed over the run. */
export interface Usage {
  input_tokens: number;
  output_tokens: number;
}
export interface AgentMessageDeltaData {
  message_id: string;
  delta: string;
}
export interface AgentCompletedData {
  message_id: string;
  final_response: string;
  duration_ms: number;
  /** Present when the agent reported the tokens it used. */
  usage?: Usage;
}
/** `code` is one of `cancelled`, `timeout`, `agent_failed`, `too_many_runs`, … */
export interface AgentErrorData {
  code: string;
  message: string;
  duration_ms: number;
}

/** The run asks its user; answer with AgentwireClient.answerInput. */
export interface InputRequiredData {
  request_id: string;
  kind: "approval" | "text" | "choice";
  prompt: string;
  tool_call_id?: string;
  options?: string[];
  schema?: Record<string, unknown>;
}
/** The answer the run took (the first one): every tab closes its prompt. */
export type InputReceivedData = { request_id: string } & Partial<{ approved: boolean; text: string; choice: string }>;

export type UserMessageEvent = StreamEventBase<"user_message", UserMessageData>;
export type AgentStartedEvent = StreamEventBase<"agent_started", AgentStartedData>;
export type AgentThinkingEvent = StreamEventBase<"agent_thinking", AgentThinkingData>;
export type ToolExecutingEvent = StreamEventBase<"tool_executing", ToolExecutingData>;
export type ToolCompletedEvent = StreamEventBase<"tool_completed", ToolCompletedData>;
export type ToolProgressEvent = StreamEventBase<"tool_progress", ToolProgressData>;
export type AgentMessageDeltaEvent = StreamEventBase<"agent_message_delta", AgentMessageDeltaData>;
export type AgentCompletedEvent = StreamEventBase<"agent_completed", AgentCompletedData>;
export type AgentErrorEvent = StreamEventBase<"agent_error", AgentErrorData>;
export type InputRequiredEvent = StreamEventBase<"input_required", InputRequiredData>;
export type InputReceivedEvent = StreamEventBase<"input_received", InputReceivedData>;
/** An event given to POST /api/v1/publish: any type, any object as data. */
export type PublishedEvent = StreamEventBase<string, Record<string, unknown>>;

/** The stream events agentwire's runs produce, by type. */
export interface AgentEventMap {
  user_message: UserMessageEvent;
  agent_started: AgentStartedEvent;
  agent_thinking: AgentThinkingEvent;
  tool_executing: ToolExecutingEvent;
  tool_completed: ToolCompletedEvent;
  tool_progress: ToolProgressEvent;
  agent_message_delta: AgentMessageDeltaEvent;
  agent_completed: AgentCompletedEvent;
  agent_error: AgentErrorEvent;
  input_required: InputRequiredEvent;
  input_received: InputReceivedEvent;
}
export type AgentEvent = AgentEventMap[keyof AgentEventMap];
/** Any frame with a seq: an agent event or a published one. */
export type StreamEvent = AgentEvent | PublishedEvent;

/** Answer to a client frame that carried an `id`. */
export interface AckFrame {
  type: "ack";
  ref: string;
  thread_id?: string;
  run_id?: string;
  message_id?: string;
}
export interface PongFrame {
  type: "pong";
  ref?: string;
}
/** `code`: bad_json, unknown_type, invalid_message, not_found, rate_limited, too_many_runs, quota_exceeded, internal_error, … */
export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  ref?: string;
}
export interface ResyncRequiredFrame {
  type: "resync_required";
  epoch: string;
  head_seq: number;
  reason: string;
}
export interface DeprecationFrame {
  type: "deprecation";
  alias: string;
  replacement: string;
  message: string;
}

/** Frames that are not in the stream (no seq). */
export interface ControlFrameMap {
  connection_established: ConnectionEstablishedFrame;
  ack: AckFrame;
  pong: PongFrame;
  error: ErrorFrame;
  resync_required: ResyncRequiredFrame;
  deprecation: DeprecationFrame;
}
export type ControlFrame = ControlFrameMap[keyof ControlFrameMap];
export type ServerFrame = ControlFrame | StreamEvent;

// ---------------------------------------------------------------------------
// Frames from the client (PROTOCOL.md section 3).

export interface UserMessageFrame {
  type: "user_message";
  id?: string;
  content: string;
  thread_id?: string;
  client_message_id?: string;
}
export interface StopAgentFrame {
  type: "stop_agent";
  id?: string;
  run_id: string;
}
export type UserInputFrame = {
  type: "user_input";
  id?: string;
  run_id: string;
  request_id: string;
} & InputAnswer;
export interface ResumeFrame {
  type: "resume";
  id?: string;
  since?: number;
  epoch?: string;
}
export interface PingFrame {
  type: "ping";
  id?: string;
}
export type ClientFrame = UserMessageFrame | StopAgentFrame | UserInputFrame | ResumeFrame | PingFrame;

// ---------------------------------------------------------------------------
// REST shapes (PROTOCOL.md section 7).

export interface Thread {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
}
export interface Message {
  id: string;
  role: "user" | "assistant";
  content: string;
  run_id?: string;
  created_at: string;
  /** On a user message that started a run: that run with its stored events. */
  run?: RunTranscript;
}
export interface Run {
  id: string;
  thread_id: string;
  status: "running" | "waiting_for_input" | "completed" | "failed" | "cancelled" | "timeout";
  started_at: string;
  ended_at?: string;
  agent?: string;
  error_code?: string;
  error_message?: string;
  /** Once a run whose agent reported its tokens has ended. */
  usage?: Usage;
}
/** A run with its transcript: its stored events, deltas folded (PROTOCOL.md section 7). */
export interface RunTranscript extends Run {
  events: StreamEvent[];
}
export interface TicketResponse {
  ticket: string;
  expires_at: string;
}
/** A page of a list: `next` is the cursor of the next page, null when none. */
export interface Page {
  next: string | null;
  has_more: boolean;
}
export interface ThreadsPage extends Page {
  threads: Thread[];
}
/** Messages oldest first. */
export interface MessagesPage extends Page {
  messages: Message[];
}
/** A run's transcript, oldest first (deltas folded; the terminal event has seq 0). */
export interface RunEventsPage extends Page {
  events: StreamEvent[];
}
export interface PageOptions {
  /** 1 to 1000 (server default 100). */
  limit?: number;
  /** The `next` of the previous page. */
  after?: string;
}
export interface MessagesPageOptions extends PageOptions {
  /** The `limit` messages right before this message id (not with after). */
  before?: string;
}
export interface DevLoginResponse {
  token: string;
  expires_at: string;
}
/** The body of POST /api/v1/publish. */
export interface PublishRequest {
  user_id: string;
  type: string;
  thread_id?: string;
  run_id?: string;
  data?: Record<string, unknown>;
  idempotency_key?: string;
}
export interface PublishResponse {
  seq: number;
  epoch: string;
}
/** The outcome of one event of a batch publish: its position, or why it was not appended. */
export interface PublishResult {
  seq?: number;
  epoch?: string;
  error?: { code: string; message: string };
}
export interface EventsResponse {
  epoch: string;
  head_seq: number;
  events: StreamEvent[];
  resync_required?: boolean;
  reason?: string;
}

// ---------------------------------------------------------------------------
// Close codes (PROTOCOL.md section 6).

export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  Abnormal: 1006,
  PolicyViolation: 1008,
  TooLarge: 1009,
  InternalError: 1011,
  NoPong: 4000,
  TokenExpired: 4001,
  SlowConsumer: 4008,
  TooManyErrors: 4029,
} as const;

// ---------------------------------------------------------------------------
// Client.

/** The smallest WebSocket surface the client uses (the browser's, or `ws`'s). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type FetchLike = (
  input: string,
  init?: { method?: string; headers?: Record<string, string>; body?: string },
) => Promise<{ ok: boolean; status: number; json(): Promise<unknown> }>;

/** The terminal event of a run. */
export type TerminalEvent = AgentCompletedEvent | AgentErrorEvent;

/** Whether ev ends its run (agent_completed or agent_error). */
export function isTerminal(ev: { type: string }): ev is TerminalEvent {
  return ev.type === "agent_completed" || ev.type === "agent_error";
}

/**
 * Connection states: `connecting` (first connect), `connected`,
 * `reconnecting` (waiting or dialing after a drop), `resumed` (connected
 * again, continuing from the last seq), `closed` (close() or a close code
 * the contract says not to retry: 1000, 1008, 1009).
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "resumed" | "closed";

export interface StateChange {
  state: ConnectionState;
  /** The close code that caused a reconnecting or closed state. */
  code?: number;
  reason?: string;
  /** Milliseconds until the next attempt, when reconnecting. */
  delayMs?: number;
  attempt?: number;
}

/** Why the refresh hook was called. */
export type RefreshReason = "expired" | "expiring" | "unauthorized";

export interface ClientOptions {
  /** Base URL of the server (http or https). Default: the page's origin. */
  url?: string;
  /** Returns the user's JWT. Called once at connect. */
  getToken: () => string | Promise<string>;
  /** Returns a fresh JWT: on close 4001, before the token's exp, and after a 401. Default: getToken. */
  refreshToken?: (reason: RefreshReason) => string | Promise<string>;
  /** "ticket" (POST /api/v1/tickets, then ?ticket=) or "subprotocol" (agentwire.v1, bearer.<JWT>). Default "ticket". */
  auth?: "ticket" | "subprotocol";
  /** WebSocket constructor. Default: globalThis.WebSocket (browsers, Node ≥ 22), else the `ws` package if installed. */
  WebSocket?: WebSocketConstructor;
  /** fetch. Default: globalThis.fetch. */
  fetch?: FetchLike;
  /** Resume position to start from (e.g. kept from an earlier page). Without it the client starts live from the head. */
  since?: number;
  epoch?: string;
  /** First backoff ceiling in ms (default 500); doubles per failed attempt up to maxDelayMs (default 30000). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Minimum wait after close 4029 (default 5000). */
  tooManyErrorsDelayMs?: number;
  /** How long sendMessage/stop/ping wait for their answer, across reconnects (default 15000). */
  ackTimeoutMs?: number;
  /** Refresh the token this long before its exp and reconnect with resume (default 30000; 0 disables). */
  refreshBeforeExpMs?: number;
  /** Application-level ping every this many ms (default 0: off; the server's protocol pings suffice). */
  pingIntervalMs?: number;
  /** Runs whose events are kept so onRun() registered late still sees them (default 100). */
  runBufferRuns?: number;
  /** Random source in [0, 1) for jitter (tests). */
  random?: () => number;
}

/** The answer of a user_input frame: exactly one field. */
export type InputAnswer = { approved: boolean } | { text: string } | { choice: string };

/**
 * A rejected request. `code` is the error frame's code (or `timeout`,
 * `closed`), or for an HTTP call the error body's code with `status` set.
 */
export class AgentwireError extends Error {
  readonly code: string;
  readonly ref?: string;
  /** The HTTP status, for REST helpers. */
  readonly status?: number;
  constructor(code: string, message: string, ref?: string, status?: number) {
    super(message);
    this.name = "AgentwireError";
    this.code = code;
    this.ref = ref;
    this.status = status;
  }
}

export interface SendMessageOptions {
  /** Omit to start a new thread. */
  threadId?: string;
  /** Idempotency key; generated when omitted. The same key within 10 min returns the first ack. */
  clientMessageId?: string;
  timeoutMs?: number;
}

/** The ack of a user_message: the ack frame plus the client_message_id sent. */
export interface MessageAck extends AckFrame {
  client_message_id: string;
}

type Handler<F> = (frame: F) => void;

interface Pending {
  frame: ClientFrame & { id: string };
  resolve: (f: AckFrame | PongFrame) => void;
  reject: (e: AgentwireError) => void;
  timer: ReturnType<typeof setTimeout>;
}

const OPEN = 1;

let idCounter = 0;

function randomID(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  let s = "";
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0");
  return s;
}

function frameID(): string {
  idCounter = (idCounter + 1) % 1e9;
  return "c" + idCounter.toString(36) + "-" + randomID().slice(0, 8);
}

/** The `exp` claim of a JWT in ms since the epoch, or undefined. The token is not verified. */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(padded);
    const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * AgentwireClient holds one connection to agentwire and keeps it up.
 * Stream events reach handlers once each, in seq order, across reconnects.
 */
export class AgentwireClient {
  private readonly opts: ClientOptions;
  private WS: WebSocketConstructor | undefined;
  private readonly fetchFn: FetchLike;
  private readonly base: string;
  private readonly rand: () => number;

  private ws: WebSocketLike | null = null;
  private token: string | null = null;
  private _state: ConnectionState = "idle";
  private wanted = false; // connect() called and close() not
  private everConnected = false;
  private attempt = 0;
  private seq = 0;
  private epoch: string | undefined;
  private hasPosition = false;
  private connectedAt = 0;
  private gapResumeSent = false;
  private established: ConnectionEstablishedFrame | null = null;

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private firstConnect: { resolve: () => void; reject: (e: Error) => void } | null = null;

  private readonly pending = new Map<string, Pending>();
  private readonly typeHandlers = new Map<string, Set<Handler<never>>>();
  private readonly runHandlers = new Map<string, Set<Handler<StreamEvent>>>();
  private readonly runBuffer = new Map<string, StreamEvent[]>();
  private readonly resyncHandlers = new Set<Handler<ResyncRequiredFrame>>();
  private readonly stateHandlers = new Set<Handler<StateChange>>();

  constructor(opts: ClientOptions) {
    this.opts = opts;
    // Found at the first connect, so a client used only for REST needs none.
    this.WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.fetchFn = fetchOf(opts.fetch);
    this.base = baseOf(opts.url);
    this.rand = opts.random ?? Math.random;
    if (opts.since !== undefined) {
      this.seq = opts.since;
      this.epoch = opts.epoch;
      this.hasPosition = true;
    }
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The last seq handled and its epoch: pass them as options.since/epoch to continue elsewhere. */
  get position(): { since: number; epoch: string | undefined } {
    return { since: this.seq, epoch: this.epoch };
  }

  /** The current connection's connection_established frame, or null while disconnected. */
  get connection(): ConnectionEstablishedFrame | null {
    return this.established;
  }

  /**
   * Starts the connection and keeps it up until close(). Resolves on the
   * first connection_established; rejects only if close() comes first or the
   * server refuses for good (1008, 1009).
   */
  connect(): Promise<void> {
    if (this.wanted) {
      return this.everConnected && this.established ? Promise.resolve() : this.waitFirst();
    }
    this.wanted = true;
    const p = this.waitFirst();
    this.setState({ state: this.everConnected ? "reconnecting" : "connecting" });
    void this.dial();
    return p;
  }

  private waitFirst(): Promise<void> {
    return new Promise((resolve, reject) => {
      const prev = this.firstConnect;
      this.firstConnect = {
        resolve: () => {
          prev?.resolve();
          resolve();
        },
        reject: (e) => {
          prev?.reject(e);
          reject(e);
        },
      };
    });
  }

  /** Closes the connection with 1000 and stops reconnecting. Pending requests reject with `closed`. */
  close(): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    this.established = null;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(CloseCode.Normal, "client closed");
      } catch {
        /* already closed */
      }
    }
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new AgentwireError("closed", "client closed", id));
    }
    this.pending.clear();
    this.firstConnect?.reject(new AgentwireError("closed", "client closed"));
    this.firstConnect = null;
    this.setState({ state: "closed", code: CloseCode.Normal });
  }

  // -- handlers ------------------------------------------------------------

  /**
   * Calls fn for every frame of type: a stream event type (`agent_started`,
   * a published type, …), a control frame type (`ack`, `error`,
   * `connection_established`, …), or `*` for every stream event. Returns a
   * function that removes the handler.
   */
  on<K extends keyof AgentEventMap>(type: K, fn: Handler<AgentEventMap[K]>): () => void;
  on<K extends keyof ControlFrameMap>(type: K, fn: Handler<ControlFrameMap[K]>): () => void;
  on(type: "*", fn: Handler<StreamEvent>): () => void;
  on(type: string, fn: Handler<PublishedEvent>): () => void;
  on(type: string, fn: Handler<never>): () => void {
    let set = this.typeHandlers.get(type);
    if (!set) this.typeHandlers.set(type, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  /**
   * Calls fn for every stream event of run runId, in seq order. Events of the
   * run that arrived before the call (kept for the last runBufferRuns runs)
   * are delivered first, so registering right after sendMessage resolves
   * misses nothing.
   */
  onRun(runId: string, fn: Handler<StreamEvent>): () => void {
    let set = this.runHandlers.get(runId);
    if (!set) this.runHandlers.set(runId, (set = new Set()));
    set.add(fn);
    for (const ev of this.runBuffer.get(runId) ?? []) fn(ev);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.runHandlers.delete(runId);
    };
  }

  /**
   * Calls fn when the server cannot replay what was missed (resync_required):
   * reload state from REST. Events then continue live from frame.head_seq.
   */
  onResync(fn: Handler<ResyncRequiredFrame>): () => void {
    this.resyncHandlers.add(fn);
    return () => {
      this.resyncHandlers.delete(fn);
    };
  }

  /** Calls fn on every connection state change. */
  onStateChange(fn: Handler<StateChange>): () => void {
    this.stateHandlers.add(fn);
    return () => {
      this.stateHandlers.delete(fn);
    };
  }

  // -- requests ------------------------------------------------------------

  /**
   * Sends a user_message and resolves with a RunHandle: its ack (thread_id,
   * run_id, message_id) with the run's events, done and stop(). Sent now if connected, else on the next connection; if the
   * connection drops before the ack it is sent again with the same
   * client_message_id, so the server starts the run once. Rejects with an
   * AgentwireError on an error frame answering it, or on timeout.
   */
  async sendMessage(content: string, opts: SendMessageOptions = {}): Promise<RunHandle> {
    const cmid = opts.clientMessageId ?? randomID();
    const frame: UserMessageFrame & { id: string } = {
      type: "user_message",
      id: frameID(),
      content,
      client_message_id: cmid,
    };
    if (opts.threadId) frame.thread_id = opts.threadId;
    const ack = (await this.request(frame, opts.timeoutMs)) as AckFrame;
    return new RunHandle(this, { ...ack, client_message_id: cmid });
  }

  /**
   * A handle on run runId started elsewhere (another tab, a REST send): its
   * events from now on (and those kept from the last runBufferRuns runs),
   * done and stop(). A run that has already ended resolves done from its
   * transcript (GET /api/v1/runs/{id}/events).
   */
  run(runId: string, threadId?: string): RunHandle {
    const h = new RunHandle(this, { type: "ack", ref: "", run_id: runId, thread_id: threadId, client_message_id: "" });
    void this.getRun(runId).then(
      (r) => {
        if (r.status !== "running" && r.status !== "waiting_for_input") h.catchUp();
      },
      () => {
        /* the stream may still bring its events */
      },
    );
    return h;
  }

  /** Asks the server to stop run runId; resolves with the ack. The run then ends with agent_error `cancelled`. */
  async stop(runId: string, timeoutMs?: number): Promise<AckFrame> {
    return (await this.request({ type: "stop_agent", id: frameID(), run_id: runId }, timeoutMs)) as AckFrame;
  }

  /**
   * Answers a run's `input_required` (`request_id`) with exactly one of
   * `approved`, `text` or `choice`; resolves with the ack. The first answer
   * from any tab wins; a later one rejects with code `conflict`. Every tab
   * then sees `input_received`.
   */
  async answerInput(runId: string, requestId: string, answer: InputAnswer, timeoutMs?: number): Promise<AckFrame> {
    return (await this.request({ type: "user_input", id: frameID(), run_id: runId, request_id: requestId, ...answer }, timeoutMs)) as AckFrame;
  }

  /** Sends an application-level ping; resolves with the pong. */
  async ping(timeoutMs?: number): Promise<PongFrame> {
    return (await this.request({ type: "ping", id: frameID() }, timeoutMs)) as PongFrame;
  }

  private request(frame: ClientFrame & { id: string }, timeoutMs?: number): Promise<AckFrame | PongFrame> {
    return new Promise((resolve, reject) => {
      if (!this.wanted) {
        reject(new AgentwireError("closed", "client is not connected: call connect() first", frame.id));
        return;
      }
      const ms = timeoutMs ?? this.opts.ackTimeoutMs ?? 15000;
      const timer = setTimeout(() => {
        this.pending.delete(frame.id);
        reject(new AgentwireError("timeout", `no answer to ${frame.type} within ${ms} ms`, frame.id));
      }, ms);
      this.pending.set(frame.id, { frame, resolve, reject, timer });
      if (this.established && this.ws?.readyState === OPEN) this.ws.send(JSON.stringify(frame));
    });
  }

  /**
   * Asks the server to replay retained events after since (default: from the
   * start of the retained history) on the open connection. Events already
   * handled are dropped by seq, so handlers see only what they missed.
   * Returns false when not connected.
   */
  requestReplay(since = 0): boolean {
    if (!this.established || this.ws?.readyState !== OPEN) return false;
    const frame: ResumeFrame = { type: "resume", since };
    if (this.epoch) frame.epoch = this.epoch;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // -- REST ----------------------------------------------------------------

  /**
   * An authenticated HTTP call to the server: the user's token as bearer,
   * refreshed once (reason `unauthorized`) on a 401. Resolves with the JSON
   * answer (undefined for an empty one); rejects with an AgentwireError
   * carrying the error body's code and the status.
   */
  async api<T>(method: string, path: string, body?: unknown): Promise<T> {
    const call = async () =>
      httpJSON<T>(this.fetchFn, method, this.base + path, { Authorization: "Bearer " + (await this.currentToken()) }, body);
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof AgentwireError) || err.status !== 401) throw err;
      await this.refresh("unauthorized");
      return call();
    }
  }

  /** One page of the user's threads, most recently updated first (GET /api/v1/threads). */
  listThreads(opts: PageOptions = {}): Promise<ThreadsPage> {
    return this.api("GET", "/api/v1/threads" + query(opts));
  }

  /** Every thread of the user, page after page. */
  threads(opts: { limit?: number } = {}): AsyncIterable<Thread> {
    return paginate((after) => this.listThreads({ ...opts, after }), (p) => p.threads);
  }

  /** One page of a thread's messages, oldest first (GET /api/v1/threads/{id}/messages). */
  listMessages(threadId: string, opts: MessagesPageOptions = {}): Promise<MessagesPage> {
    return this.api("GET", `/api/v1/threads/${encodeURIComponent(threadId)}/messages` + query(opts));
  }

  /** Every message of a thread, oldest first, page after page. */
  messages(threadId: string, opts: { limit?: number } = {}): AsyncIterable<Message> {
    return paginate((after) => this.listMessages(threadId, { ...opts, after }), (p) => p.messages);
  }

  /** Renames a thread (PATCH /api/v1/threads/{id} `{"title"}`); resolves with the thread. */
  renameThread(threadId: string, title: string): Promise<Thread> {
    return this.api("PATCH", `/api/v1/threads/${encodeURIComponent(threadId)}`, { title });
  }

  /** Deletes a thread with its messages and runs (DELETE /api/v1/threads/{id}). */
  async deleteThread(threadId: string): Promise<void> {
    await this.api("DELETE", `/api/v1/threads/${encodeURIComponent(threadId)}`);
  }

  /** A run's status (GET /api/v1/runs/{id}). */
  getRun(runId: string): Promise<Run> {
    return this.api("GET", `/api/v1/runs/${encodeURIComponent(runId)}`);
  }

  /** One page of a run's transcript (GET /api/v1/runs/{id}/events). */
  listRunEvents(runId: string, opts: PageOptions = {}): Promise<RunEventsPage> {
    return this.api("GET", `/api/v1/runs/${encodeURIComponent(runId)}/events` + query(opts));
  }

  /** A run's whole transcript, oldest first: deltas folded, the terminal event (if the run ended) last with seq 0. */
  async runTranscript(runId: string, opts: { limit?: number } = {}): Promise<StreamEvent[]> {
    const out: StreamEvent[] = [];
    for await (const ev of paginate((after) => this.listRunEvents(runId, { ...opts, after }), (p) => p.events)) out.push(ev);
    return out;
  }

  // -- connection ----------------------------------------------------------

  private async currentToken(): Promise<string> {
    if (this.token === null) this.token = await this.opts.getToken();
    return this.token;
  }

  private async refresh(reason: RefreshReason): Promise<void> {
    const hook = this.opts.refreshToken ?? (() => this.opts.getToken());
    this.token = await hook(reason);
  }

  private wsURL(query: Record<string, string>): string {
    const u = new URL(this.base + "/ws");
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u.toString();
  }

  private async ticket(token: string): Promise<{ ticket?: string; status: number }> {
    const res = await this.fetchFn(this.base + "/api/v1/tickets", {
      method: "POST",
      headers: { Authorization: "Bearer " + token },
    });
    if (!res.ok) return { status: res.status };
    const body = (await res.json()) as TicketResponse;
    return { ticket: body.ticket, status: res.status };
  }

  private async dial(): Promise<void> {
    if (!this.wanted) return;
    if (!this.WS) {
      this.WS = await loadWebSocket();
      if (!this.WS) {
        // Nothing to dial with: retrying cannot help.
        this.failForGood(new AgentwireError("closed", "agentwire: no WebSocket: use Node ≥ 22, install ws, or pass options.WebSocket"));
        return;
      }
    }
    const WS = this.WS;
    let ws: WebSocketLike;
    try {
      let token = await this.currentToken();
      const exp = tokenExpiry(token);
      if (exp !== undefined && exp <= Date.now()) {
        await this.refresh("expired");
        token = await this.currentToken();
      }
      const query: Record<string, string> = {};
      if (this.hasPosition) {
        query.since = String(this.seq);
        if (this.epoch) query.epoch = this.epoch;
      }
      if ((this.opts.auth ?? "ticket") === "ticket") {
        let t = await this.ticket(token);
        if (t.status === 401) {
          await this.refresh("unauthorized");
          t = await this.ticket(await this.currentToken());
        }
        if (!t.ticket) throw new Error(`POST /api/v1/tickets answered ${t.status}`);
        query.ticket = t.ticket;
        if (!this.wanted) return;
        ws = new WS(this.wsURL(query));
      } else {
        if (!this.wanted) return;
        ws = new WS(this.wsURL(query), [PROTOCOL, "bearer." + token]);
      }
    } catch (err) {
      if (!this.wanted) return;
      this.scheduleReconnect(CloseCode.Abnormal, String((err as Error)?.message ?? err));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data !== "string") return;
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data) as ServerFrame;
      } catch {
        return;
      }
      this.handleFrame(frame);
    };
    ws.onerror = () => {
      /* a close follows */
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.onSocketClose(ev.code, ev.reason);
    };
  }

  private onSocketClose(code: number, reason: string): void {
    const wasUp = this.established !== null;
    this.ws = null;
    this.established = null;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    if (!this.wanted) return;
    if (wasUp && Date.now() - this.connectedAt > 10000) this.attempt = 0;
    switch (code) {
      case CloseCode.Normal:
      case CloseCode.PolicyViolation:
      case CloseCode.TooLarge: {
        // The contract: 1008 stop, 1009 fix the client; 1000 is a deliberate end.
        this.failForGood(new AgentwireError("closed", `connection closed with ${code}${reason ? ": " + reason : ""}`), code, reason);
        return;
      }
      case CloseCode.TokenExpired: {
        // The first 4001 reconnects at once with the fresh token; a repeat backs off.
        const first = this.attempt === 0;
        this.setState({ state: "reconnecting", code, reason, attempt: this.attempt });
        this.refresh("expired").then(
          () => this.scheduleReconnect(code, reason, first ? 0 : undefined),
          () => this.scheduleReconnect(code, reason),
        );
        if (first) this.attempt++;
        return;
      }
    }
    // Before connection_established a 401 looks like 1006 to a browser: an
    // expired token is the likely cause when exp has passed (checked in dial).
    this.scheduleReconnect(code, reason);
  }

  /** Stops for good: pending requests and connect() reject with err, state closed. */
  private failForGood(err: AgentwireError, code?: number, reason?: string): void {
    this.wanted = false;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.firstConnect?.reject(err);
    this.firstConnect = null;
    this.setState({ state: "closed", code, reason: reason ?? err.message });
  }

  /** Waits (full jitter over an exponential ceiling, or delayMs) and dials again with resume. */
  private scheduleReconnect(code: number, reason: string, delayMs?: number): void {
    if (!this.wanted) return;
    clearTimeout(this.reconnectTimer);
    const base = this.opts.initialDelayMs ?? 500;
    const max = this.opts.maxDelayMs ?? 30000;
    let delay = delayMs;
    if (delay === undefined) {
      const ceiling = Math.min(max, base * 2 ** Math.min(this.attempt, 20));
      delay = Math.floor(this.rand() * ceiling);
      if (code === CloseCode.TooManyErrors) {
        const floor = this.opts.tooManyErrorsDelayMs ?? 5000;
        delay = floor + Math.floor(this.rand() * Math.max(floor, ceiling));
      }
      this.attempt++;
    }
    this.setState({ state: "reconnecting", code, reason, delayMs: delay, attempt: this.attempt });
    this.reconnectTimer = setTimeout(() => void this.dial(), delay);
  }

  private handleFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case "connection_established":
        this.onEstablished(frame as ConnectionEstablishedFrame);
        return;
      case "resync_required": {
        const f = frame as ResyncRequiredFrame;
        this.epoch = f.epoch;
        this.seq = f.head_seq;
        this.hasPosition = true;
        for (const fn of this.resyncHandlers) fn(f);
        this.emitType(f);
        return;
      }
      case "ack":
      case "pong": {
        const f = frame as AckFrame | PongFrame;
        const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
        if (p) {
          this.pending.delete(f.ref as string);
          clearTimeout(p.timer);
          p.resolve(f);
        }
        this.emitType(f);
        return;
      }
      case "error": {
        const f = frame as ErrorFrame;
        const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
        if (p) {
          this.pending.delete(f.ref as string);
          clearTimeout(p.timer);
          p.reject(new AgentwireError(f.code, f.message, f.ref));
        }
        this.emitType(f);
        return;
      }
    }
    const ev = frame as StreamEvent;
    if (typeof ev.seq !== "number") {
      this.emitType(frame); // deprecation and other control frames
      return;
    }
    this.onEvent(ev);
  }

  private onEstablished(f: ConnectionEstablishedFrame): void {
    const resumed = this.everConnected;
    this.established = f;
    this.connectedAt = Date.now();
    this.gapResumeSent = false;
    if (!this.hasPosition || this.epoch === undefined) {
      // Live from the head: a resume asked for (since without epoch) keeps its seq.
      if (!this.hasPosition) this.seq = f.head_seq;
      this.epoch = f.epoch;
      this.hasPosition = true;
    }
    this.everConnected = true;
    this.setState({ state: resumed ? "resumed" : "connected" });
    this.emitType(f);
    for (const [, p] of this.pending) this.ws?.send(JSON.stringify(p.frame));
    this.armRefresh();
    this.armPing();
    this.firstConnect?.resolve();
    this.firstConnect = null;
  }

  private onEvent(ev: StreamEvent): void {
    if (ev.epoch === this.epoch && ev.seq <= this.seq) return; // seen
    if (ev.epoch !== this.epoch) {
      // A new epoch without resync_required (only when none was known).
      this.epoch = ev.epoch;
    } else if (ev.seq > this.seq + 1 && this.ws?.readyState === OPEN) {
      // A gap the contract rules out; ask for it (once) rather than lose it.
      if (!this.gapResumeSent) {
        this.gapResumeSent = true;
        const resume: ResumeFrame = { type: "resume", since: this.seq, epoch: this.epoch };
        this.ws.send(JSON.stringify(resume));
      }
      return;
    }
    this.gapResumeSent = false;
    this.seq = ev.seq;
    if (ev.run_id) {
      let buf = this.runBuffer.get(ev.run_id);
      if (!buf) {
        this.runBuffer.set(ev.run_id, (buf = []));
        const limit = this.opts.runBufferRuns ?? 100;
        while (this.runBuffer.size > limit) {
          const oldest = this.runBuffer.keys().next().value as string;
          this.runBuffer.delete(oldest);
        }
      }
      buf.push(ev);
    }
    this.emitType(ev);
    for (const fn of this.typeHandlers.get("*") ?? []) this.safe(fn as Handler<StreamEvent>, ev);
    if (ev.run_id) {
      for (const fn of this.runHandlers.get(ev.run_id) ?? []) this.safe(fn, ev);
    }
  }

  private emitType(f: ServerFrame): void {
    for (const fn of this.typeHandlers.get(f.type) ?? []) this.safe(fn as Handler<ServerFrame>, f);
  }

  private safe<F>(fn: Handler<F>, f: F): void {
    try {
      fn(f);
    } catch (err) {
      // A failing handler must not stop delivery to the others.
      setTimeout(() => {
        throw err;
      });
    }
  }

  private setState(change: StateChange): void {
    this._state = change.state;
    for (const fn of this.stateHandlers) this.safe(fn, change);
  }

  private armRefresh(): void {
    clearTimeout(this.refreshTimer);
    const lead = this.opts.refreshBeforeExpMs ?? 30000;
    if (lead <= 0 || this.token === null) return;
    const exp = tokenExpiry(this.token);
    if (exp === undefined) return;
    const ms = Math.max(0, exp - lead - Date.now());
    this.refreshTimer = setTimeout(() => void this.refreshAndReconnect(), ms);
  }

  /** Gets a fresh token before exp and moves to a new connection with resume. */
  private async refreshAndReconnect(): Promise<void> {
    try {
      await this.refresh("expiring");
    } catch {
      return; // 4001 at exp will try again
    }
    const ws = this.ws;
    if (!this.wanted || !ws) return;
    this.ws = null;
    this.established = null;
    clearInterval(this.pingTimer);
    ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
    try {
      ws.close(CloseCode.Normal, "token refresh");
    } catch {
      /* already closed */
    }
    this.scheduleReconnect(CloseCode.TokenExpired, "token refresh", 0);
  }

  private armPing(): void {
    clearInterval(this.pingTimer);
    const every = this.opts.pingIntervalMs ?? 0;
    if (every <= 0) return;
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || !this.established) return;
      this.ping(every).catch((err: AgentwireError) => {
        // No pong in time: this socket is dead even if it looks open.
        if (err.code === "timeout" && this.ws === ws) {
          ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
          try {
            ws.close(CloseCode.Normal, "no pong");
          } catch {
            /* already closed */
          }
          this.onSocketClose(CloseCode.NoPong, "no pong");
        }
      });
    }, every);
  }
}

// ---------------------------------------------------------------------------
// Run handle.

/**
 * One run: the ack of the message that started it (thread_id, run_id,
 * message_id, client_message_id) plus its events, its end and stop().
 * Events reach the handle once each, in order, across reconnects. After a
 * resync_required (events lost), the handle fills the gap from the run's
 * transcript, where the answer's deltas are folded (one delta may then hold
 * text an earlier delta of the handle also held).
 */
export class RunHandle implements MessageAck {
  readonly type = "ack" as const;
  readonly ref: string;
  readonly run_id: string;
  readonly thread_id?: string;
  readonly message_id?: string;
  readonly client_message_id: string;
  /** The run's terminal event: agent_completed, or agent_error (`cancelled`, `agent_failed`, `timeout`, …). */
  readonly done: Promise<TerminalEvent>;
  /**
   * The run's events, in order, ending after the terminal event. Each
   * iteration starts from the run's first event the handle saw (the handle
   * keeps them until it is dropped).
   */
  readonly events: AsyncIterable<StreamEvent>;

  private readonly client: AgentwireClient;
  private readonly seen: StreamEvent[] = [];
  private lastSeq = 0;
  private lastEpoch: string | undefined;
  private ended = false;
  private wake: (() => void)[] = [];
  private resolveDone!: (ev: TerminalEvent) => void;
  private readonly unsubscribe: (() => void)[] = [];

  /** @internal Made by AgentwireClient.sendMessage and AgentwireClient.run. */
  constructor(client: AgentwireClient, ack: MessageAck) {
    this.client = client;
    this.ref = ack.ref;
    this.run_id = ack.run_id as string;
    this.thread_id = ack.thread_id;
    this.message_id = ack.message_id;
    this.client_message_id = ack.client_message_id;
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.events = { [Symbol.asyncIterator]: () => this.iterate() };
    this.unsubscribe.push(client.onResync(() => this.catchUp()));
    this.unsubscribe.push(client.onRun(this.run_id, (ev) => this.add(ev)));
    if (this.ended) for (const u of this.unsubscribe) u(); // ended among the kept events
  }

  /** The ack's fields (the handle itself holds its client). */
  toJSON(): MessageAck {
    const { type, ref, run_id, thread_id, message_id, client_message_id } = this;
    return { type, ref, run_id, thread_id, message_id, client_message_id };
  }

  /** Asks the server to stop the run; resolves with the ack. `done` then resolves with agent_error `cancelled`. */
  stop(timeoutMs?: number): Promise<AckFrame> {
    return this.client.stop(this.run_id, timeoutMs);
  }

  /** Answers the run's input_required `requestId`. */
  answerInput(requestId: string, answer: InputAnswer, timeoutMs?: number): Promise<AckFrame> {
    return this.client.answerInput(this.run_id, requestId, answer, timeoutMs);
  }

  /** Fills what the stream lost from the run's transcript. */
  catchUp(): void {
    if (this.ended) return;
    this.client.runTranscript(this.run_id).then(
      (events) => {
        for (const ev of events) this.add(ev);
      },
      () => {
        /* the stream may still bring the rest */
      },
    );
  }

  private add(ev: StreamEvent): void {
    if (this.ended) return;
    if (ev.seq === 0) {
      // A transcript's terminal event (stored before the stream took it).
      if (!isTerminal(ev)) return;
    } else {
      if (ev.epoch && ev.epoch !== this.lastEpoch) {
        this.lastEpoch = ev.epoch;
        this.lastSeq = 0;
      }
      if (ev.seq <= this.lastSeq) return;
      this.lastSeq = ev.seq;
    }
    this.seen.push(ev);
    if (isTerminal(ev)) {
      this.ended = true;
      for (const u of this.unsubscribe) u();
      this.resolveDone(ev);
    }
    const w = this.wake;
    this.wake = [];
    for (const fn of w) fn();
  }

  private async *iterate(): AsyncGenerator<StreamEvent> {
    let i = 0;
    for (;;) {
      while (i < this.seen.length) yield this.seen[i++];
      if (this.ended) return;
      await new Promise<void>((r) => this.wake.push(r));
    }
  }
}

// ---------------------------------------------------------------------------
// HTTP helpers.

function fetchOf(f?: FetchLike): FetchLike {
  const g = f ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (!g) throw new Error("agentwire: no fetch: pass options.fetch");
  return g.bind(globalThis) as FetchLike;
}

function baseOf(url?: string): string {
  const loc = (globalThis as { location?: { origin: string } }).location;
  const base = url ?? loc?.origin;
  if (!base) throw new Error("agentwire: options.url is required outside a browser");
  return base.replace(/\/+$/, "");
}

/** globalThis.WebSocket (browsers, Node ≥ 22), else the `ws` package when it is installed. */
async function loadWebSocket(): Promise<WebSocketConstructor | undefined> {
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return g;
  const spec = "ws"; // a variable: bundlers for the browser must not resolve it
  try {
    const mod = (await import(spec)) as { default?: WebSocketConstructor; WebSocket?: WebSocketConstructor };
    return mod.WebSocket ?? mod.default;
  } catch {
    return undefined;
  }
}

function query(opts: object): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(opts)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? "?" + s : "";
}

async function* paginate<P extends Page, T>(page: (after?: string) => Promise<P>, items: (p: P) => T[]): AsyncGenerator<T> {
  let after: string | undefined;
  for (;;) {
    const p = await page(after);
    yield* items(p);
    if (!p.has_more || !p.next) return;
    after = p.next;
  }
}

/** One JSON call: the answer's JSON (undefined when empty), or an AgentwireError with the error body's code and the status. */
async function httpJSON<T>(f: FetchLike, method: string, url: string, headers: Record<string, string>, body?: unknown): Promise<T> {
  const init: { method: string; headers: Record<string, string>; body?: string } = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await f(url, init);
  let parsed: unknown;
  if (res.status !== 204) {
    try {
      parsed = await res.json();
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) {
    const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new AgentwireError(e?.code ?? "http_" + res.status, e?.message ?? `${method} ${new URL(url).pathname} answered ${res.status}`, undefined, res.status);
  }
  return parsed as T;
}

export interface HTTPOptions {
  /** Base URL of the server. Default: the page's origin. */
  url?: string;
  /** fetch. Default: globalThis.fetch. */
  fetch?: FetchLike;
}

/**
 * Development login (a server started with --dev): a 12-hour JWT for
 * userId (POST /auth/dev-login). Use it as getToken: `() => devLogin("alice", {url}).then((r) => r.token)`.
 */
export function devLogin(userId: string, opts: HTTPOptions = {}): Promise<DevLoginResponse> {
  return httpJSON(fetchOf(opts.fetch), "POST", baseOf(opts.url) + "/auth/dev-login", {}, { user_id: userId });
}

export interface PublishOptions extends HTTPOptions {
  /** A server API key (--api-keys). Keep it on the server: never ship it to a browser. */
  apiKey: string;
}

/**
 * Server side: appends one event to a user's stream (POST /api/v1/publish
 * with an API key); resolves with its seq and epoch. Every connection of
 * the user receives it. The same idempotency_key within 10 minutes appends
 * nothing and answers the first seq.
 */
export function publish(event: PublishRequest, opts: PublishOptions): Promise<PublishResponse> {
  return httpJSON(fetchOf(opts.fetch), "POST", baseOf(opts.url) + "/api/v1/publish", { Authorization: "Bearer " + opts.apiKey }, event);
}

/**
 * Server side: appends up to 1000 events in one request (POST
 * /api/v1/publish with {"events":[…]}, at most 1 MiB); resolves with one
 * result per event, in order. One user's events are appended all or none:
 * when one is refused (its own error), that user's others carry
 * `batch_aborted`. A refusal of the whole batch (413 too_large, 401, …)
 * rejects with an AgentwireError.
 */
export async function publishBatch(events: PublishRequest[], opts: PublishOptions): Promise<PublishResult[]> {
  const res: { results: PublishResult[] } = await httpJSON(fetchOf(opts.fetch), "POST", baseOf(opts.url) + "/api/v1/publish",
    { Authorization: "Bearer " + opts.apiKey }, { events });
  return res.results;
}
