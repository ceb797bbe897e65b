package main

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestKilledBySignal: a command the terminal's Ctrl-C (or SIGTERM) ended counts as the demo
// being interrupted, also when the step wrapped its error; a command that failed on its own
// does not. (A Ctrl-C during `kubectl patch` once ended the demo with status 1 and "step
// scale failed" instead of 130.)
func TestKilledBySignal(t *testing.T) {
	run := func(script string) error { return exec.Command("sh", "-c", script).Run() }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"SIGINT", run("kill -INT $$"), true},
		{"SIGTERM, wrapped as kubectl's error is", fmt.Errorf("kubectl patch: %w: ", run("kill -TERM $$")), true},
		{"SIGKILL", run("kill -KILL $$"), false},
		{"exit status 1", run("exit 1"), false},
		{"not a command", errors.New("waiting for pets: context deadline exceeded"), false},
	} {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, killedBySignal(tc.err), "%v", tc.err) })
	}
}
