/** The subprotocol and version this client speaks. */
export declare const PROTOCOL = "agentwire.v1";
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
export type InputReceivedData = {
    request_id: string;
} & Partial<{
    approved: boolean;
    text: string;
    choice: string;
}>;
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
    error?: {
        code: string;
        message: string;
    };
}
export interface EventsResponse {
    epoch: string;
    head_seq: number;
    events: StreamEvent[];
    resync_required?: boolean;
    reason?: string;
}
export declare const CloseCode: {
    readonly Normal: 1000;
    readonly GoingAway: 1001;
    readonly Abnormal: 1006;
    readonly PolicyViolation: 1008;
    readonly TooLarge: 1009;
    readonly InternalError: 1011;
    readonly NoPong: 4000;
    readonly TokenExpired: 4001;
    readonly SlowConsumer: 4008;
    readonly TooManyErrors: 4029;
};
/** The smallest WebSocket surface the client uses (the browser's, or `ws`'s). */
export interface WebSocketLike {
    readonly readyState: number;
    readonly protocol: string;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
        wasClean?: boolean;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
export type FetchLike = (input: string, init?: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
}) => Promise<{
    ok: boolean;
    status: number;
    json(): Promise<unknown>;
}>;
/** The terminal event of a run. */
export type TerminalEvent = AgentCompletedEvent | AgentErrorEvent;
/** Whether ev ends its run (agent_completed or agent_error). */
export declare function isTerminal(ev: {
    type: string;
}): ev is TerminalEvent;
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
export type InputAnswer = {
    approved: boolean;
} | {
    text: string;
} | {
    choice: string;
};
/**
 * A rejected request. `code` is the error frame's code (or `timeout`,
 * `closed`), or for an HTTP call the error body's code with `status` set.
 */
export declare class AgentwireError extends Error {
    readonly code: string;
    readonly ref?: string;
    /** The HTTP status, for REST helpers. */
    readonly status?: number;
    constructor(code: string, message: string, ref?: string, status?: number);
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
/** The `exp` claim of a JWT in ms since the epoch, or undefined. The token is not verified. */
export declare function tokenExpiry(token: string): number | undefined;
/**
 * AgentwireClient holds one connection to agentwire and keeps it up.
 * Stream events reach handlers once each, in seq order, across reconnects.
 */
export declare class AgentwireClient {
    private readonly opts;
    private WS;
    private readonly fetchFn;
    private readonly base;
    private readonly rand;
    private ws;
    private token;
    private _state;
    private wanted;
    private everConnected;
    private attempt;
    private seq;
    private epoch;
    private hasPosition;
    private connectedAt;
    private gapResumeSent;
    private established;
    private reconnectTimer;
    private refreshTimer;
    private pingTimer;
    private firstConnect;
    private readonly pending;
    private readonly typeHandlers;
    private readonly runHandlers;
    private readonly runBuffer;
    private readonly resyncHandlers;
    private readonly stateHandlers;
    constructor(opts: ClientOptions);
    /** The connection state. */
    get state(): ConnectionState;
    /** The last seq handled and its epoch: pass them as options.since/epoch to continue elsewhere. */
    get position(): {
        since: number;
        epoch: string | undefined;
    };
    /** The current connection's connection_established frame, or null while disconnected. */
    get connection(): ConnectionEstablishedFrame | null;
    /**
     * Starts the connection and keeps it up until close(). Resolves on the
     * first connection_established; rejects only if close() comes first or the
     * server refuses for good (1008, 1009).
     */
    connect(): Promise<void>;
    private waitFirst;
    /** Closes the connection with 1000 and stops reconnecting. Pending requests reject with `closed`. */
    close(): void;
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
    /**
     * Calls fn for every stream event of run runId, in seq order. Events of the
     * run that arrived before the call (kept for the last runBufferRuns runs)
     * are delivered first, so registering right after sendMessage resolves
     * misses nothing.
     */
    onRun(runId: string, fn: Handler<StreamEvent>): () => void;
    /**
     * Calls fn when the server cannot replay what was missed (resync_required):
     * reload state from REST. Events then continue live from frame.head_seq.
     */
    onResync(fn: Handler<ResyncRequiredFrame>): () => void;
    /** Calls fn on every connection state change. */
    onStateChange(fn: Handler<StateChange>): () => void;
    /**
     * Sends a user_message and resolves with a RunHandle: its ack (thread_id,
     * run_id, message_id) with the run's events, done and stop(). Sent now if connected, else on the next connection; if the
     * connection drops before the ack it is sent again with the same
     * client_message_id, so the server starts the run once. Rejects with an
     * AgentwireError on an error frame answering it, or on timeout.
     */
    sendMessage(content: string, opts?: SendMessageOptions): Promise<RunHandle>;
    /**
     * A handle on run runId started elsewhere (another tab, a REST send): its
     * events from now on (and those kept from the last runBufferRuns runs),
     * done and stop(). A run that has already ended resolves done from its
     * transcript (GET /api/v1/runs/{id}/events).
     */
    run(runId: string, threadId?: string): RunHandle;
    /** Asks the server to stop run runId; resolves with the ack. The run then ends with agent_error `cancelled`. */
    stop(runId: string, timeoutMs?: number): Promise<AckFrame>;
    /**
     * Answers a run's `input_required` (`request_id`) with exactly one of
     * `approved`, `text` or `choice`; resolves with the ack. The first answer
     * from any tab wins; a later one rejects with code `conflict`. Every tab
     * then sees `input_received`.
     */
    answerInput(runId: string, requestId: string, answer: InputAnswer, timeoutMs?: number): Promise<AckFrame>;
    /** Sends an application-level ping; resolves with the pong. */
    ping(timeoutMs?: number): Promise<PongFrame>;
    private request;
    /**
     * Asks the server to replay retained events after since (default: from the
     * start of the retained history) on the open connection. Events already
     * handled are dropped by seq, so handlers see only what they missed.
     * Returns false when not connected.
     */
    requestReplay(since?: number): boolean;
    /**
     * An authenticated HTTP call to the server: the user's token as bearer,
     * refreshed once (reason `unauthorized`) on a 401. Resolves with the JSON
     * answer (undefined for an empty one); rejects with an AgentwireError
     * carrying the error body's code and the status.
     */
    api<T>(method: string, path: string, body?: unknown): Promise<T>;
    /** One page of the user's threads, most recently updated first (GET /api/v1/threads). */
    listThreads(opts?: PageOptions): Promise<ThreadsPage>;
    /** Every thread of the user, page after page. */
    threads(opts?: {
        limit?: number;
    }): AsyncIterable<Thread>;
    /** One page of a thread's messages, oldest first (GET /api/v1/threads/{id}/messages). */
    listMessages(threadId: string, opts?: MessagesPageOptions): Promise<MessagesPage>;
    /** Every message of a thread, oldest first, page after page. */
    messages(threadId: string, opts?: {
        limit?: number;
    }): AsyncIterable<Message>;
    /** Renames a thread (PATCH /api/v1/threads/{id} `{"title"}`); resolves with the thread. */
    renameThread(threadId: string, title: string): Promise<Thread>;
    /** Deletes a thread with its messages and runs (DELETE /api/v1/threads/{id}). */
    deleteThread(threadId: string): Promise<void>;
    /** A run's status (GET /api/v1/runs/{id}). */
    getRun(runId: string): Promise<Run>;
    /** One page of a run's transcript (GET /api/v1/runs/{id}/events). */
    listRunEvents(runId: string, opts?: PageOptions): Promise<RunEventsPage>;
    /** A run's whole transcript, oldest first: deltas folded, the terminal event (if the run ended) last with seq 0. */
    runTranscript(runId: string, opts?: {
        limit?: number;
    }): Promise<StreamEvent[]>;
    private currentToken;
    private refresh;
    private wsURL;
    private ticket;
    private dial;
    private onSocketClose;
    /** Stops for good: pending requests and connect() reject with err, state closed. */
    private failForGood;
    /** Waits (full jitter over an exponential ceiling, or delayMs) and dials again with resume. */
    private scheduleReconnect;
    private handleFrame;
    private onEstablished;
    private onEvent;
    private emitType;
    private safe;
    private setState;
    private armRefresh;
    /** Gets a fresh token before exp and moves to a new connection with resume. */
    private refreshAndReconnect;
    private armPing;
}
/**
 * One run: the ack of the message that started it (thread_id, run_id,
 * message_id, client_message_id) plus its events, its end and stop().
 * Events reach the handle once each, in order, across reconnects. After a
 * resync_required (events lost), the handle fills the gap from the run's
 * transcript, where the answer's deltas are folded (one delta may then hold
 * text an earlier delta of the handle also held).
 */
export declare class RunHandle implements MessageAck {
    readonly type: "ack";
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
    private readonly client;
    private readonly seen;
    private lastSeq;
    private lastEpoch;
    private ended;
    private wake;
    private resolveDone;
    private readonly unsubscribe;
    /** @internal Made by AgentwireClient.sendMessage and AgentwireClient.run. */
    constructor(client: AgentwireClient, ack: MessageAck);
    /** The ack's fields (the handle itself holds its client). */
    toJSON(): MessageAck;
    /** Asks the server to stop the run; resolves with the ack. `done` then resolves with agent_error `cancelled`. */
    stop(timeoutMs?: number): Promise<AckFrame>;
    /** Answers the run's input_required `requestId`. */
    answerInput(requestId: string, answer: InputAnswer, timeoutMs?: number): Promise<AckFrame>;
    /** Fills what the stream lost from the run's transcript. */
    catchUp(): void;
    private add;
    private iterate;
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
export declare function devLogin(userId: string, opts?: HTTPOptions): Promise<DevLoginResponse>;
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
export declare function publish(event: PublishRequest, opts: PublishOptions): Promise<PublishResponse>;
/**
 * Server side: appends up to 1000 events in one request (POST
 * /api/v1/publish with {"events":[…]}, at most 1 MiB); resolves with one
 * result per event, in order. One user's events are appended all or none:
 * when one is refused (its own error), that user's others carry
 * `batch_aborted`. A refusal of the whole batch (413 too_large, 401, …)
 * rejects with an AgentwireError.
 */
export declare function publishBatch(events: PublishRequest[], opts: PublishOptions): Promise<PublishResult[]>;
export {};
