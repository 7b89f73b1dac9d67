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
};
/** Whether ev ends its run (agent_completed or agent_error). */
export function isTerminal(ev) {
    return ev.type === "agent_completed" || ev.type === "agent_error";
}
/**
 * A rejected request. `code` is the error frame's code (or `timeout`,
 * `closed`), or for an HTTP call the error body's code with `status` set.
 */
export class AgentwireError extends Error {
    constructor(code, message, ref, status) {
        super(message);
        this.name = "AgentwireError";
        this.code = code;
        this.ref = ref;
        this.status = status;
    }
}
const OPEN = 1;
let idCounter = 0;
function randomID() {
    const c = globalThis.crypto;
    if (c?.randomUUID)
        return c.randomUUID();
    let s = "";
    for (let i = 0; i < 4; i++)
        s += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0");
    return s;
}
function frameID() {
    idCounter = (idCounter + 1) % 1e9;
    return "c" + idCounter.toString(36) + "-" + randomID().slice(0, 8);
}
/** The `exp` claim of a JWT in ms since the epoch, or undefined. The token is not verified. */
export function tokenExpiry(token) {
    const part = token.split(".")[1];
    if (!part)
        return undefined;
    try {
        const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
        const bin = atob(padded);
        const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
        const claims = JSON.parse(new TextDecoder().decode(bytes));
        return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
    }
    catch {
        return undefined;
    }
}
/**
 * AgentwireClient holds one connection to agentwire and keeps it up.
 * Stream events reach handlers once each, in seq order, across reconnects.
 */
export class AgentwireClient {
    constructor(opts) {
        this.ws = null;
        this.token = null;
        this._state = "idle";
        this.wanted = false; // connect() called and close() not
        this.everConnected = false;
        this.attempt = 0;
        this.seq = 0;
        this.hasPosition = false;
        this.connectedAt = 0;
        this.gapResumeSent = false;
        this.established = null;
        this.firstConnect = null;
        this.pending = new Map();
        this.typeHandlers = new Map();
        this.runHandlers = new Map();
        this.runBuffer = new Map();
        this.resyncHandlers = new Set();
        this.stateHandlers = new Set();
        this.opts = opts;
        // Found at the first connect, so a client used only for REST needs none.
        this.WS = opts.WebSocket ?? globalThis.WebSocket;
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
    get state() {
        return this._state;
    }
    /** The last seq handled and its epoch: pass them as options.since/epoch to continue elsewhere. */
    get position() {
        return { since: this.seq, epoch: this.epoch };
    }
    /** The current connection's connection_established frame, or null while disconnected. */
    get connection() {
        return this.established;
    }
    /**
     * Starts the connection and keeps it up until close(). Resolves on the
     * first connection_established; rejects only if close() comes first or the
     * server refuses for good (1008, 1009).
     */
    connect() {
        if (this.wanted) {
            return this.everConnected && this.established ? Promise.resolve() : this.waitFirst();
        }
        this.wanted = true;
        const p = this.waitFirst();
        this.setState({ state: this.everConnected ? "reconnecting" : "connecting" });
        void this.dial();
        return p;
    }
    waitFirst() {
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
    close() {
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
            }
            catch {
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
    on(type, fn) {
        let set = this.typeHandlers.get(type);
        if (!set)
            this.typeHandlers.set(type, (set = new Set()));
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
    onRun(runId, fn) {
        let set = this.runHandlers.get(runId);
        if (!set)
            this.runHandlers.set(runId, (set = new Set()));
        set.add(fn);
        for (const ev of this.runBuffer.get(runId) ?? [])
            fn(ev);
        return () => {
            set.delete(fn);
            if (set.size === 0)
                this.runHandlers.delete(runId);
        };
    }
    /**
     * Calls fn when the server cannot replay what was missed (resync_required):
     * reload state from REST. Events then continue live from frame.head_seq.
     */
    onResync(fn) {
        this.resyncHandlers.add(fn);
        return () => {
            this.resyncHandlers.delete(fn);
        };
    }
    /** Calls fn on every connection state change. */
    onStateChange(fn) {
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
    async sendMessage(content, opts = {}) {
        const cmid = opts.clientMessageId ?? randomID();
        const frame = {
            type: "user_message",
            id: frameID(),
            content,
            client_message_id: cmid,
        };
        if (opts.threadId)
            frame.thread_id = opts.threadId;
        const ack = (await this.request(frame, opts.timeoutMs));
        return new RunHandle(this, { ...ack, client_message_id: cmid });
    }
    /**
     * A handle on run runId started elsewhere (another tab, a REST send): its
     * events from now on (and those kept from the last runBufferRuns runs),
     * done and stop(). A run that has already ended resolves done from its
     * transcript (GET /api/v1/runs/{id}/events).
     */
    run(runId, threadId) {
        const h = new RunHandle(this, { type: "ack", ref: "", run_id: runId, thread_id: threadId, client_message_id: "" });
        void this.getRun(runId).then((r) => {
            if (r.status !== "running" && r.status !== "waiting_for_input")
                h.catchUp();
        }, () => {
            /* the stream may still bring its events */
        });
        return h;
    }
    /** Asks the server to stop run runId; resolves with the ack. The run then ends with agent_error `cancelled`. */
    async stop(runId, timeoutMs) {
        return (await this.request({ type: "stop_agent", id: frameID(), run_id: runId }, timeoutMs));
    }
    /**
     * Answers a run's `input_required` (`request_id`) with exactly one of
     * `approved`, `text` or `choice`; resolves with the ack. The first answer
     * from any tab wins; a later one rejects with code `conflict`. Every tab
     * then sees `input_received`.
     */
    async answerInput(runId, requestId, answer, timeoutMs) {
        return (await this.request({ type: "user_input", id: frameID(), run_id: runId, request_id: requestId, ...answer }, timeoutMs));
    }
    /** Sends an application-level ping; resolves with the pong. */
    async ping(timeoutMs) {
        return (await this.request({ type: "ping", id: frameID() }, timeoutMs));
    }
    request(frame, timeoutMs) {
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
            if (this.established && this.ws?.readyState === OPEN)
                this.ws.send(JSON.stringify(frame));
        });
    }
    /**
     * Asks the server to replay retained events after since (default: from the
     * start of the retained history) on the open connection. Events already
     * handled are dropped by seq, so handlers see only what they missed.
     * Returns false when not connected.
     */
    requestReplay(since = 0) {
        if (!this.established || this.ws?.readyState !== OPEN)
            return false;
        const frame = { type: "resume", since };
        if (this.epoch)
            frame.epoch = this.epoch;
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
    async api(method, path, body) {
        const call = async () => httpJSON(this.fetchFn, method, this.base + path, { Authorization: "Bearer " + (await this.currentToken()) }, body);
        try {
            return await call();
        }
        catch (err) {
            if (!(err instanceof AgentwireError) || err.status !== 401)
                throw err;
            await this.refresh("unauthorized");
            return call();
        }
    }
    /** One page of the user's threads, most recently updated first (GET /api/v1/threads). */
    listThreads(opts = {}) {
        return this.api("GET", "/api/v1/threads" + query(opts));
    }
    /** Every thread of the user, page after page. */
    threads(opts = {}) {
        return paginate((after) => this.listThreads({ ...opts, after }), (p) => p.threads);
    }
    /** One page of a thread's messages, oldest first (GET /api/v1/threads/{id}/messages). */
    listMessages(threadId, opts = {}) {
        return this.api("GET", `/api/v1/threads/${encodeURIComponent(threadId)}/messages` + query(opts));
    }
    /** Every message of a thread, oldest first, page after page. */
    messages(threadId, opts = {}) {
        return paginate((after) => this.listMessages(threadId, { ...opts, after }), (p) => p.messages);
    }
    /** Renames a thread (PATCH /api/v1/threads/{id} `{"title"}`); resolves with the thread. */
    renameThread(threadId, title) {
        return this.api("PATCH", `/api/v1/threads/${encodeURIComponent(threadId)}`, { title });
    }
    /** Deletes a thread with its messages and runs (DELETE /api/v1/threads/{id}). */
    async deleteThread(threadId) {
        await this.api("DELETE", `/api/v1/threads/${encodeURIComponent(threadId)}`);
    }
    /** A run's status (GET /api/v1/runs/{id}). */
    getRun(runId) {
        return this.api("GET", `/api/v1/runs/${encodeURIComponent(runId)}`);
    }
    /** One page of a run's transcript (GET /api/v1/runs/{id}/events). */
    listRunEvents(runId, opts = {}) {
        return this.api("GET", `/api/v1/runs/${encodeURIComponent(runId)}/events` + query(opts));
    }
    /** A run's whole transcript, oldest first: deltas folded, the terminal event (if the run ended) last with seq 0. */
    async runTranscript(runId, opts = {}) {
        const out = [];
        for await (const ev of paginate((after) => this.listRunEvents(runId, { ...opts, after }), (p) => p.events))
            out.push(ev);
        return out;
    }
    // -- connection ----------------------------------------------------------
    async currentToken() {
        if (this.token === null)
            this.token = await this.opts.getToken();
        return this.token;
    }
    async refresh(reason) {
        const hook = this.opts.refreshToken ?? (() => this.opts.getToken());
        this.token = await hook(reason);
    }
    wsURL(query) {
        const u = new URL(this.base + "/ws");
        u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        for (const [k, v] of Object.entries(query))
            u.searchParams.set(k, v);
        return u.toString();
    }
    async ticket(token) {
        const res = await this.fetchFn(this.base + "/api/v1/tickets", {
            method: "POST",
            headers: { Authorization: "Bearer " + token },
        });
        if (!res.ok)
            return { status: res.status };
        const body = (await res.json());
        return { ticket: body.ticket, status: res.status };
    }
    async dial() {
        if (!this.wanted)
            return;
        if (!this.WS) {
            this.WS = await loadWebSocket();
            if (!this.WS) {
                // Nothing to dial with: retrying cannot help.
                this.failForGood(new AgentwireError("closed", "agentwire: no WebSocket: use Node ≥ 22, install ws, or pass options.WebSocket"));
                return;
            }
        }
        const WS = this.WS;
        let ws;
        try {
            let token = await this.currentToken();
            const exp = tokenExpiry(token);
            if (exp !== undefined && exp <= Date.now()) {
                await this.refresh("expired");
                token = await this.currentToken();
            }
            const query = {};
            if (this.hasPosition) {
                query.since = String(this.seq);
                if (this.epoch)
                    query.epoch = this.epoch;
            }
            if ((this.opts.auth ?? "ticket") === "ticket") {
                let t = await this.ticket(token);
                if (t.status === 401) {
                    await this.refresh("unauthorized");
                    t = await this.ticket(await this.currentToken());
                }
                if (!t.ticket)
                    throw new Error(`POST /api/v1/tickets answered ${t.status}`);
                query.ticket = t.ticket;
                if (!this.wanted)
                    return;
                ws = new WS(this.wsURL(query));
            }
            else {
                if (!this.wanted)
                    return;
                ws = new WS(this.wsURL(query), [PROTOCOL, "bearer." + token]);
            }
        }
        catch (err) {
            if (!this.wanted)
                return;
            this.scheduleReconnect(CloseCode.Abnormal, String(err?.message ?? err));
            return;
        }
        this.ws = ws;
        ws.onmessage = (ev) => {
            if (this.ws !== ws)
                return;
            if (typeof ev.data !== "string")
                return;
            let frame;
            try {
                frame = JSON.parse(ev.data);
            }
            catch {
                return;
            }
            this.handleFrame(frame);
        };
        ws.onerror = () => {
            /* a close follows */
        };
        ws.onclose = (ev) => {
            if (this.ws !== ws)
                return;
            this.onSocketClose(ev.code, ev.reason);
        };
    }
    onSocketClose(code, reason) {
        const wasUp = this.established !== null;
        this.ws = null;
        this.established = null;
        clearTimeout(this.refreshTimer);
        clearInterval(this.pingTimer);
        if (!this.wanted)
            return;
        if (wasUp && Date.now() - this.connectedAt > 10000)
            this.attempt = 0;
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
                this.refresh("expired").then(() => this.scheduleReconnect(code, reason, first ? 0 : undefined), () => this.scheduleReconnect(code, reason));
                if (first)
                    this.attempt++;
                return;
            }
        }
        // Before connection_established a 401 looks like 1006 to a browser: an
        // expired token is the likely cause when exp has passed (checked in dial).
        this.scheduleReconnect(code, reason);
    }
    /** Stops for good: pending requests and connect() reject with err, state closed. */
    failForGood(err, code, reason) {
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
    scheduleReconnect(code, reason, delayMs) {
        if (!this.wanted)
            return;
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
    handleFrame(frame) {
        switch (frame.type) {
            case "connection_established":
                this.onEstablished(frame);
                return;
            case "resync_required": {
                const f = frame;
                this.epoch = f.epoch;
                this.seq = f.head_seq;
                this.hasPosition = true;
                for (const fn of this.resyncHandlers)
                    fn(f);
                this.emitType(f);
                return;
            }
            case "ack":
            case "pong": {
                const f = frame;
                const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
                if (p) {
                    this.pending.delete(f.ref);
                    clearTimeout(p.timer);
                    p.resolve(f);
                }
                this.emitType(f);
                return;
            }
            case "error": {
                const f = frame;
                const p = f.ref !== undefined ? this.pending.get(f.ref) : undefined;
                if (p) {
                    this.pending.delete(f.ref);
                    clearTimeout(p.timer);
                    p.reject(new AgentwireError(f.code, f.message, f.ref));
                }
                this.emitType(f);
                return;
            }
        }
        const ev = frame;
        if (typeof ev.seq !== "number") {
            this.emitType(frame); // deprecation and other control frames
            return;
        }
        this.onEvent(ev);
    }
    onEstablished(f) {
        const resumed = this.everConnected;
        this.established = f;
        this.connectedAt = Date.now();
        this.gapResumeSent = false;
        if (!this.hasPosition || this.epoch === undefined) {
            // Live from the head: a resume asked for (since without epoch) keeps its seq.
            if (!this.hasPosition)
                this.seq = f.head_seq;
            this.epoch = f.epoch;
            this.hasPosition = true;
        }
        this.everConnected = true;
        this.setState({ state: resumed ? "resumed" : "connected" });
        this.emitType(f);
        for (const [, p] of this.pending)
            this.ws?.send(JSON.stringify(p.frame));
        this.armRefresh();
        this.armPing();
        this.firstConnect?.resolve();
        this.firstConnect = null;
    }
    onEvent(ev) {
        if (ev.epoch === this.epoch && ev.seq <= this.seq)
            return; // seen
        if (ev.epoch !== this.epoch) {
            // A new epoch without resync_required (only when none was known).
            this.epoch = ev.epoch;
        }
        else if (ev.seq > this.seq + 1 && this.ws?.readyState === OPEN) {
            // A gap the contract rules out; ask for it (once) rather than lose it.
            if (!this.gapResumeSent) {
                this.gapResumeSent = true;
                const resume = { type: "resume", since: this.seq, epoch: this.epoch };
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
                    const oldest = this.runBuffer.keys().next().value;
                    this.runBuffer.delete(oldest);
                }
            }
            buf.push(ev);
        }
        this.emitType(ev);
        for (const fn of this.typeHandlers.get("*") ?? [])
            this.safe(fn, ev);
        if (ev.run_id) {
            for (const fn of this.runHandlers.get(ev.run_id) ?? [])
                this.safe(fn, ev);
        }
    }
    emitType(f) {
        for (const fn of this.typeHandlers.get(f.type) ?? [])
            this.safe(fn, f);
    }
    safe(fn, f) {
        try {
            fn(f);
        }
        catch (err) {
            // A failing handler must not stop delivery to the others.
            setTimeout(() => {
                throw err;
            });
        }
    }
    setState(change) {
        this._state = change.state;
        for (const fn of this.stateHandlers)
            this.safe(fn, change);
    }
    armRefresh() {
        clearTimeout(this.refreshTimer);
        const lead = this.opts.refreshBeforeExpMs ?? 30000;
        if (lead <= 0 || this.token === null)
            return;
        const exp = tokenExpiry(this.token);
        if (exp === undefined)
            return;
        const ms = Math.max(0, exp - lead - Date.now());
        this.refreshTimer = setTimeout(() => void this.refreshAndReconnect(), ms);
    }
    /** Gets a fresh token before exp and moves to a new connection with resume. */
    async refreshAndReconnect() {
        try {
            await this.refresh("expiring");
        }
        catch {
            return; // 4001 at exp will try again
        }
        const ws = this.ws;
        if (!this.wanted || !ws)
            return;
        this.ws = null;
        this.established = null;
        clearInterval(this.pingTimer);
        ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
        try {
            ws.close(CloseCode.Normal, "token refresh");
        }
        catch {
            /* already closed */
        }
        this.scheduleReconnect(CloseCode.TokenExpired, "token refresh", 0);
    }
    armPing() {
        clearInterval(this.pingTimer);
        const every = this.opts.pingIntervalMs ?? 0;
        if (every <= 0)
            return;
        this.pingTimer = setInterval(() => {
            const ws = this.ws;
            if (!ws || !this.established)
                return;
            this.ping(every).catch((err) => {
                // No pong in time: this socket is dead even if it looks open.
                if (err.code === "timeout" && this.ws === ws) {
                    ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
                    try {
                        ws.close(CloseCode.Normal, "no pong");
                    }
                    catch {
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
export class RunHandle {
    /** @internal Made by AgentwireClient.sendMessage and AgentwireClient.run. */
    constructor(client, ack) {
        this.type = "ack";
        this.seen = [];
        this.lastSeq = 0;
        this.ended = false;
        this.wake = [];
        this.unsubscribe = [];
        this.client = client;
        this.ref = ack.ref;
        this.run_id = ack.run_id;
        this.thread_id = ack.thread_id;
        this.message_id = ack.message_id;
        this.client_message_id = ack.client_message_id;
        this.done = new Promise((resolve) => (this.resolveDone = resolve));
        this.events = { [Symbol.asyncIterator]: () => this.iterate() };
        this.unsubscribe.push(client.onResync(() => this.catchUp()));
        this.unsubscribe.push(client.onRun(this.run_id, (ev) => this.add(ev)));
        if (this.ended)
            for (const u of this.unsubscribe)
                u(); // ended among the kept events
    }
    /** The ack's fields (the handle itself holds its client). */
    toJSON() {
        const { type, ref, run_id, thread_id, message_id, client_message_id } = this;
        return { type, ref, run_id, thread_id, message_id, client_message_id };
    }
    /** Asks the server to stop the run; resolves with the ack. `done` then resolves with agent_error `cancelled`. */
    stop(timeoutMs) {
        return this.client.stop(this.run_id, timeoutMs);
    }
    /** Answers the run's input_required `requestId`. */
    answerInput(requestId, answer, timeoutMs) {
        return this.client.answerInput(this.run_id, requestId, answer, timeoutMs);
    }
    /** Fills what the stream lost from the run's transcript. */
    catchUp() {
        if (this.ended)
            return;
        this.client.runTranscript(this.run_id).then((events) => {
            for (const ev of events)
                this.add(ev);
        }, () => {
            /* the stream may still bring the rest */
        });
    }
    add(ev) {
        if (this.ended)
            return;
        if (ev.seq === 0) {
            // A transcript's terminal event (stored before the stream took it).
            if (!isTerminal(ev))
                return;
        }
        else {
            if (ev.epoch && ev.epoch !== this.lastEpoch) {
                this.lastEpoch = ev.epoch;
                this.lastSeq = 0;
            }
            if (ev.seq <= this.lastSeq)
                return;
            this.lastSeq = ev.seq;
        }
        this.seen.push(ev);
        if (isTerminal(ev)) {
            this.ended = true;
            for (const u of this.unsubscribe)
                u();
            this.resolveDone(ev);
        }
        const w = this.wake;
        this.wake = [];
        for (const fn of w)
            fn();
    }
    async *iterate() {
        let i = 0;
        for (;;) {
            while (i < this.seen.length)
                yield this.seen[i++];
            if (this.ended)
                return;
            await new Promise((r) => this.wake.push(r));
        }
    }
}
// ---------------------------------------------------------------------------
// HTTP helpers.
function fetchOf(f) {
    const g = f ?? globalThis.fetch;
    if (!g)
        throw new Error("agentwire: no fetch: pass options.fetch");
    return g.bind(globalThis);
}
function baseOf(url) {
    const loc = globalThis.location;
    const base = url ?? loc?.origin;
    if (!base)
        throw new Error("agentwire: options.url is required outside a browser");
    return base.replace(/\/+$/, "");
}
/** globalThis.WebSocket (browsers, Node ≥ 22), else the `ws` package when it is installed. */
async function loadWebSocket() {
    const g = globalThis.WebSocket;
    if (g)
        return g;
    const spec = "ws"; // a variable: bundlers for the browser must not resolve it
    try {
        const mod = (await import(spec));
        return mod.WebSocket ?? mod.default;
    }
    catch {
        return undefined;
    }
}
function query(opts) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts))
        if (v !== undefined && v !== null && v !== "")
            q.set(k, String(v));
    const s = q.toString();
    return s ? "?" + s : "";
}
async function* paginate(page, items) {
    let after;
    for (;;) {
        const p = await page(after);
        yield* items(p);
        if (!p.has_more || !p.next)
            return;
        after = p.next;
    }
}
/** One JSON call: the answer's JSON (undefined when empty), or an AgentwireError with the error body's code and the status. */
async function httpJSON(f, method, url, headers, body) {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
    }
    const res = await f(url, init);
    let parsed;
    if (res.status !== 204) {
        try {
            parsed = await res.json();
        }
        catch {
            parsed = undefined;
        }
    }
    if (!res.ok) {
        const e = parsed?.error;
        throw new AgentwireError(e?.code ?? "http_" + res.status, e?.message ?? `${method} ${new URL(url).pathname} answered ${res.status}`, undefined, res.status);
    }
    return parsed;
}
/**
 * Development login (a server started with --dev): a 12-hour JWT for
 * userId (POST /auth/dev-login). Use it as getToken: `() => devLogin("alice", {url}).then((r) => r.token)`.
 */
export function devLogin(userId, opts = {}) {
    return httpJSON(fetchOf(opts.fetch), "POST", baseOf(opts.url) + "/auth/dev-login", {}, { user_id: userId });
}
/**
 * Server side: appends one event to a user's stream (POST /api/v1/publish
 * with an API key); resolves with its seq and epoch. Every connection of
 * the user receives it. The same idempotency_key within 10 minutes appends
 * nothing and answers the first seq.
 */
export function publish(event, opts) {
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
export async function publishBatch(events, opts) {
    const res = await httpJSON(fetchOf(opts.fetch), "POST", baseOf(opts.url) + "/api/v1/publish", { Authorization: "Bearer " + opts.apiKey }, { events });
    return res.results;
}
