// Package redis is the stream.Stream of a multi-node agentwire: every node
// behind the load balancer appends to and reads from one Redis (7.0+: a
// standalone server, a Redis Cluster or the master Sentinel names; see
// redisx.ParseURL), and live events reach the nodes holding the user's
// sockets via sharded pub/sub.
//
// # Client: rueidis, chosen by measurement
//
// Both go-redis v9.23.0 and rueidis v1.0.79 were benchmarked against a local
// Redis 7.0.15 with -cpu 2 (2 cores): the append script (HINCRBY + XADD
// MAXLEN + SPUBLISH by EVALSHA, parallel callers) and a fan-in of SPUBLISHes
// on 64 channels into one subscribed connection (op = one message received):
//
//	                 go-redis                     rueidis
//	append (EVALSHA) 88.1 µs/op 540 B 16 allocs   44.7 µs/op 160 B 2 allocs
//	pub/sub fan-in   22.4 µs/op 497 B 15 allocs   22.6 µs/op 215 B 4 allocs
//
// rueidis halves the append latency under concurrency (auto-pipelining: the
// callers' commands share one connection's round trips) and allocates a
// fraction as much; fan-in is equal in time with fewer allocations. Its
// Receive gives what Subscribe needs: SSUBSCRIBE routed by slot on a
// cluster, a hook on its confirmation, and a return when the connection is
// lost or Redis ends the subscription. The package's own figures (this package, -cpu 2,
// same machine): BenchmarkAppend 61 µs/op 980 B 14 allocs, BenchmarkAppendDeliver
// (append on node A, handler called on node B) 67 µs/op 1683 B 24 allocs.
//
// # Keys
//
// Every key and the channel of one user share the hash tag {u:<id>}
// (redisx.UserTag, as every Redis key of a user does), where <id> is the
// user id base64url-encoded (no padding), so ids containing '}'
// or ':' can neither collide with another user's keys nor move the tag, and
// the multi-key scripts are valid on Redis Cluster (one slot per user):
//
//	<prefix>:{u:<id>}:meta       hash  e epoch, h head seq, t newest ts (µs,
//	                                   never decreasing), n when the oldest
//	                                   retained event expires (µs, lower bound),
//	                                   b frame bytes kept, r the replication id
//	                                   of the master that wrote it (Failover)
//	<prefix>:{u:<id>}:log        Redis Stream, entry id <seq>-0,
//	                                   fields t (µs) and f (the frame bytes)
//	<prefix>:{u:<id>}:idem:<key> hash  e epoch, s seq, f frame; TTL 10 min
//	<prefix>:{u:<id>}:live       sharded pub/sub channel (SPUBLISH)
//
// The prefix (default "aw") must not contain braces. meta and log get a TTL
// of MaxAge + 1 min, renewed by every append and, for users subscribed on
// some node, every (MaxAge + 1 min)/3 by that node: a user's keys vanish only
// when it had no event and no live connection for longer than MaxAge, i.e.
// when nothing of its history could be served any more.
//
// # Append: one script, gapless across nodes
//
// Go encodes the frame once with protocol.EncodeEvent, with seq 0 and epoch "" as a
// placeholder, and passes it with the placeholder's offsets. One Lua script,
// atomic for the user, then: answers an idempotency key of the current epoch
// with the first event; creates the epoch when meta is missing (the random
// ULID Go passed is used only then, and a stale log of a lost epoch is
// dropped); increments head; splices seq and epoch into the frame (two string
// concatenations); XADDs it with id <seq>-0; trims (trimLua): walks the log
// from its oldest entry while it is over the count or byte bound or, when
// meta.n says the oldest entry may have expired, the age bound, then XTRIM
// MINID to the first entry kept (a user only over the count bound, the
// steady state of a full log, reads just the entries dropped and that one);
// sets the TTLs; and SPUBLISHes the frame. Go rebuilds the same bytes from
// the template instead of receiving them back.
//
// Because seq assignment, storage and publication happen in one script, and
// Redis runs scripts one at a time, for every user: the log never holds N+1
// without N; a reader never sees head N before event N is stored; and the
// publications reach every subscribed connection in seq order (Redis keeps a
// connection's pub/sub messages in order). No node ever holds an "assigned
// but not yet stored" seq, so no cross-node lock or reorder buffer is needed.
// The frame's ts is the appending node's clock; the t used for age trimming
// is clamped to never decrease within a user, so trimming from the front is
// correct even with clock skew between nodes.
//
// SPUBLISH (Redis 7.0) rather than PUBLISH: on a cluster a message stays in
// the user's shard instead of being broadcast over the cluster bus to every
// node; on a standalone Redis the two are equivalent.
//
// Appends of concurrent callers are sent together (appendPipe,
// pipeline.go): the first caller to find the queue empty starts a sender,
// which yields the processor once so that the handlers already runnable
// queue theirs, then sends the queue: up to 32 appends per script call (the
// script runs them in turn, each as above, each with its own reply; an
// append whose commands fail, e.g. on a key of the wrong type, fails alone),
// all the calls in one DoMulti (one write to each Redis node, one read of the
// replies). The call and the lineage check are paid once per call, not per
// event. On a Redis Cluster each append is its own call, as keys of different
// users may not share a script there. The next caller starts the next batch
// while this one is in flight, and nothing waits for a batch to fill. A
// caller that leaves before its append is taken removes it, never sent. A
// script Redis does not hold (NOSCRIPT: restarted, failed over, flushed) did
// not run and is sent again by Lua.Exec, which loads it.
//
// AppendBatch is the same in one script (batchScript) for up to
// stream.MaxBatch records of one user: each record in turn is answered from
// its idempotency key or gets head+1, its frame, its XADD and its SPUBLISH;
// the trim (the same Lua, trimLua) and the meta update run once at the end.
// One round trip for the whole batch, atomic for the user.
//
// # Since and Head
//
// One read script returns epoch, head and the frames with seq > since whose
// t is within MaxAge; the ResyncError rules are the memory backend's
// (epoch_changed, since_ahead_of_head, history_expired). A user without meta
// gets one there (head 0, the idle TTL), so the epoch Head reports is the one
// its first Append uses.
//
// # Subscribe: at-most-once pub/sub made gapless
//
// Each subscribed user has one SSUBSCRIBE on this node, shared by its local
// handlers (refcounted), owned by one goroutine (receiveLoop) running the
// client's Receive: on a cluster the client routes it by slot to the
// user's master, elsewhere there is one server; subscriptions share the
// client's connection to that node (RESP3). Subscribe returns after the
// SSUBSCRIBE is confirmed and the user's head read, so every event appended
// after it returns is delivered.
//
// Per user the node keeps the epoch and the last seq delivered. A message
// with seq last+1 is delivered; an older one is dropped (duplicates); a seq
// gap or an unknown epoch starts a fill: Since(last) from the log, delivered
// in order, while newer live messages wait in a bounded buffer, replayed
// afterwards. Receive returns when the connection drops or Redis ends the
// subscription (on a cluster, sunsubscribe when the slot moves or its master
// fails over); receiveLoop subscribes again and, once confirmed, fills the
// user from its last seq, so a message lost in between (even the last one,
// which no later seq would reveal) is read from the log. A subscription that
// neither delivers nor ends (a half-open connection) is caught by the
// watchdog: every CheckEvery (5 s) it reads every subscribed user's head in
// one pipeline; a user behind is filled, and one behind at two checks in a
// row with no live message in between gets its Receive restarted. Handlers
// are called one at a time per user, in seq order, never with a network
// call in progress; they run on the connection's reader and must not block.
// A gap the log cannot fill any more (trimmed by retention before it could
// be read) is logged and skipped; clients see the seq jump and resume,
// which answers resync_required.
//
// # Failover
//
// Replication is asynchronous: a replica promoted after its master died may
// lack the last events, which nodes may have delivered already. Both
// scripts read INFO replication: meta's r is the replication id of the
// master that wrote the user's history; a master promoted from that one
// reports it as master_replid2, and then the first append or read of the
// user starts a new epoch (an empty log) instead of reusing seqs clients
// may have seen: resuming clients get resync_required (epoch_changed),
// never a gap under the old epoch. A master restarted in place (new
// replication id, no master_replid2) keeps the epoch: its history is what
// its disk kept (README, "Redis Cluster and Sentinel", has what each
// setting guarantees).
// The INFO call costs nothing measurable: BenchmarkAppend -cpu 2, 2000 ops
// on a shared, loaded 2-core machine, 87 µs/op with it, 93 µs/op without.
//
// # Failures
//
// Network errors, LOADING, BUSY, MASTERDOWN, TRYAGAIN and CLUSTERDOWN wrap
// stream.ErrUnavailable (the HTTP layer answers 503). The client is the
// node's one client (redisx.Dial: dials bounded by 2 s, no retries, a
// write timeout of 6 s), shared with the tickets, the limits and the stop
// channel. New succeeds with Redis down; the client keeps trying to
// connect.
//
// When Redis restarts empty (it keeps nothing on disk) every user's history
// is gone: the first Append or read of a user makes a new epoch and seq
// restarts at 1, so clients resuming with the old epoch get resync_required
// (epoch_changed). Live subscriptions survive: the node reconnects,
// resubscribes, finds the new epoch and follows it from seq 1; connected
// clients then see frames with a new epoch (and seq 1, 2, …) on their socket.
package redis
