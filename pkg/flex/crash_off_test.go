//go:build !petfabric_crash

package flex

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestProductionBuildHasNoCrashHook: without the petfabric_crash tag the variable is ignored.
// (Were the hook compiled in, the d.crash call below would SIGKILL the test binary.)
func TestProductionBuildHasNoCrashHook(t *testing.T) {
	for _, step := range append(append([]string{}, MountSteps...), UnmountSteps...) {
		t.Setenv(EnvCrashAt, step)
		assert.Nil(t, crashHookFromEnv(), step)
		d := &Driver{Crash: crashHookFromEnv()}
		d.crash(step)
	}
}
