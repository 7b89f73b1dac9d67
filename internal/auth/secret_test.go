package auth

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "nested")
	secret, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 32 {
		t.Fatalf("secret is %d bytes, want 32", len(secret))
	}
	if runtime.GOOS != "windows" {
		for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, SecretFile): 0o600} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s mode = %04o, want %04o", path, got, want)
			}
		}
	}
	again, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret, again) {
		t.Fatal("second call returned a different secret")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries, want only %s", len(entries), SecretFile)
	}
}

func TestLoadOrCreateSecretConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secrets := make([][]byte, 10)
	var wg sync.WaitGroup
	for i := range secrets {
		wg.Go(func() {
			s, err := LoadOrCreateSecret(dir)
			if err != nil {
				t.Error(err)
			}
			secrets[i] = s
		})
	}
	wg.Wait()
	for _, s := range secrets[1:] {
		if !bytes.Equal(s, secrets[0]) {
			t.Fatal("concurrent first uses returned different secrets")
		}
	}
}

func TestLoadOrCreateSecretRejects(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantMsg string
	}{
		{"world readable", "0123456789abcdef0123456789abcdef", 0o644, "chmod 600"},
		{"group readable", "0123456789abcdef0123456789abcdef", 0o640, "chmod 600"},
		{"empty", "", 0o600, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, SecretFile)
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // umask may have narrowed it
				t.Fatal(err)
			}
			s, err := LoadOrCreateSecret(dir)
			if err == nil {
				t.Fatalf("accepted secret %q", s)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}
