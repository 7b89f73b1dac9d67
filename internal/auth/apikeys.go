package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// APIKeys is the set of keys accepted on the server endpoints. It is
// immutable and safe for concurrent use.
type APIKeys struct {
	digests [][sha256.Size]byte
}

// NewAPIKeys returns the set of keys, each trimmed of surrounding spaces;
// empty entries are ignored. Only SHA-256 digests of the keys are kept.
func NewAPIKeys(keys []string) *APIKeys {
	k := &APIKeys{}
	for _, key := range keys {
		if key = strings.TrimSpace(key); key != "" {
			k.digests = append(k.digests, sha256.Sum256([]byte(key)))
		}
	}
	return k
}

// Check reports whether key is in the set. It compares fixed-size digests in
// constant time against every key, so its duration reveals neither which key
// matched nor how long the keys are. An empty key never matches.
func (k *APIKeys) Check(key string) bool {
	if key == "" {
		return false
	}
	d := sha256.Sum256([]byte(key))
	match := 0
	for i := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], k.digests[i][:])
	}
	return match == 1
}

// Len returns the number of keys in the set.
func (k *APIKeys) Len() int { return len(k.digests) }
