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

// NamedKeys is a set of keys each known by a name (the admin keys): the
// name says in the logs which key acted, the key itself is never kept,
// only its SHA-256 digest.
type NamedKeys struct {
	names   []string
	digests [][sha256.Size]byte
}

// NewNamedKeys returns the set of name → key.
func NewNamedKeys(keys map[string]string) *NamedKeys {
	k := &NamedKeys{}
	for name, key := range keys {
		k.names = append(k.names, name)
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	return k
}

// Len is the number of keys.
func (k *NamedKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.digests)
}

// Check returns the name of key when it is in the set. Like APIKeys.Check
// it compares fixed-size digests in constant time against every key.
func (k *NamedKeys) Check(key string) (string, bool) {
	if key == "" || k == nil {
		return "", false
	}
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return k.names[found], true
}
