//go:build petfabric_crash

package flex

import (
	"os"
	"syscall"
)

// crashHookFromEnv returns the crash hook for the step named in PETFABRIC_FLEX_CRASH_AT (test
// builds only; see crash.go).
func crashHookFromEnv() func(string) {
	step := os.Getenv(EnvCrashAt)
	if step == "" {
		return nil
	}
	return func(at string) {
		if at == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
