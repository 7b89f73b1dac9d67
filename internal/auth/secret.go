package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// SecretFile is the name, inside the data directory, of the generated HS256
// secret.
const SecretFile = "jwt-secret"

// secretSize is the length of a generated secret: 256 bits, the HS256 key
// size recommended by RFC 7518.
const secretSize = 32

// LoadOrCreateSecret returns the HS256 secret kept in dataDir/jwt-secret,
// creating dataDir (0700) if needed. On first use it generates 32 random
// bytes and writes them atomically with mode 0600; when two processes race,
// both end up with the same secret. The file holds the raw secret bytes. A
// file readable or writable by group or others, or an empty one, is an error.
func LoadOrCreateSecret(dataDir string) ([]byte, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: data dir: %w", err)
	}
	path := filepath.Join(dataDir, SecretFile)
	secret, err := readSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}

	secret = make([]byte, secretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("auth: generate secret: %w", err)
	}
	if err := createFile(path, secret); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecret(path) // another process won the race
		}
		return nil, err
	}
	return secret, nil
}

func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("auth: secret: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: secret: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("auth: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("auth: %s has permissions %04o, so other users can read the JWT secret; run chmod 600 %s", path, perm, path)
	}
	secret, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: secret: %w", err)
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("auth: %s is empty; delete it to generate a new secret", path)
	}
	return secret, nil
}

// createFile writes data to a temporary file and links it to path, so path
// never exists half-written and an existing path is never replaced (the
// error then wraps fs.ErrExist).
func createFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("auth: write secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return fmt.Errorf("auth: write secret: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: write secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("auth: write secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("auth: write secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("auth: write secret: %w", err)
	}
	return nil
}
