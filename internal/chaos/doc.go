// Package chaos holds agentwire's chaos suite (test files only): real nodes
// under a steady load of users, tabs, publishers, abrupt drops and runs, while
// a seeded schedule kills Redis, kills nodes, cuts PostgreSQL backends, pauses
// Redis, partitions a node from Redis and fills the SQLite disk; at the end it
// checks every connection's final view against the server's own history.
//
//	go test -race -run Chaos ./internal/chaos/ -chaos.duration 10m -chaos.seed 42
package chaos
