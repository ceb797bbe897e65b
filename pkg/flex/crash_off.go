//go:build !petfabric_crash

package flex

// crashHookFromEnv is the production build's: no crash injection, whatever the environment
// says (see crash.go).
func crashHookFromEnv() func(string) { return nil }
