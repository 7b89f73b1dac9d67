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
    status: "running" | "completed" | "failed" | "cancelled" | "timeout";
    started_at: string;
    ended_at?: string;
    agent?: string;
    error_code?: string;
    error_message?: string;
}
/** A run with its transcript: its stored events, deltas folded (PROTOCOL.md section 7). */
export interface RunTranscript extends Run {
    events: StreamEvent[];
}
export interface TicketResponse {
    ticket: string;
    expires_at: string;
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
    /** WebSocket constructor. Default: globalThis.WebSocket. */
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
/** A rejected sendMessage/stop/ping. `code` is the error frame's code, or `timeout`, `closed`. */
export declare class AgentwireError extends Error {
    readonly code: string;
    readonly ref?: string;
    constructor(code: string, message: string, ref?: string);
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
    private readonly WS;
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
     * Sends a user_message and resolves with its ack (thread_id, run_id,
     * message_id). Sent now if connected, else on the next connection; if the
     * connection drops before the ack it is sent again with the same
     * client_message_id, so the server starts the run once. Rejects with an
     * AgentwireError on an error frame answering it, or on timeout.
     */
    sendMessage(content: string, opts?: SendMessageOptions): Promise<MessageAck>;
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
    private currentToken;
    private refresh;
    private wsURL;
    private ticket;
    private dial;
    private onSocketClose;
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
export {};
