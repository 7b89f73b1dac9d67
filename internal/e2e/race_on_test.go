//go:build race

package e2e

// raceEnabled says the test binary was built with -race; the binary test
// then builds agentwire with -race too, which reuses the packages already
// compiled for this test instead of compiling them all again.
const raceEnabled = true
