package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A shortened log of a real failing run: a testify failure under a subtest, a t.Fatal
// failure, process logs printed on failure, and a passing test.
const failingLog = `=== RUN   TestFaults
    faults_test.go:40: environment ready in 18.989s
=== RUN   TestFaults/extender_down
    faults_test.go:167: 
        	Error Trace:	/check/work/main/test/e2e/faults/faults_test.go:167
        	Error:      	Not equal: 
        	            	expected: "SchedulerError"
        	            	actual  : "Unschedulable"
        	Test:       	TestFaults/extender_down
        	Messages:   	an unreachable extender is a scheduler error, not a fit failure
    faults_test.go:183: scheduler attempts while the extender was down: 0
=== NAME  TestFaults
    env_test.go:372: webhook-1 log (tail):
        {"time":"2026-11-30T15:33:55Z","level":"INFO","msg":"cluster id"}
--- FAIL: TestFaults (111.94s)
    --- FAIL: TestFaults/extender_down (20.00s)
=== RUN   TestWalk
    walk_test.go:10: product ready in 30s
    walk_test.go:12: step scale: 2 of 3 pets Running after 3m0s
    env.go:99: kubelet log (tail):
        l1
        l2
        l3
        l4
        l5
        l6
        l7
        l8
        l9
        l10
--- FAIL: TestWalk (180.00s)
=== RUN   TestFine
--- PASS: TestFine (0.00s)
FAIL
FAIL	github.com/petfabric/petfabric/test/e2e/faults	148.854s
ok  	github.com/petfabric/petfabric/test/product	0.488s
`

func TestDigest(t *testing.T) {
	lines, err := digest(strings.NewReader(failingLog))
	require.NoError(t, err)
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"--- FAIL: TestFaults (111.94s)",
		"--- FAIL: TestFaults/extender_down (20.00s)",
		`Error: Not equal:`,
		`expected: "SchedulerError"`,
		"Messages: an unreachable extender is a scheduler error, not a fit failure",
		"--- FAIL: TestWalk (180.00s)",
		"walk_test.go:12:",
		"step scale: 2 of 3 pets Running after 3m0s",
		"FAIL\tgithub.com/petfabric/petfabric/test/e2e/faults\t148.854s",
	} {
		assert.Contains(t, got, want)
	}
	assert.NotContains(t, got, "TestFine")
	assert.NotContains(t, got, "environment ready", "a testify failure is shown alone, without the test's other log lines")
	assert.NotContains(t, got, "kubelet log", "a long dump is not taken for the cause")
	assert.NotContains(t, got, `"level":"INFO"`, "process logs printed on failure are left out")
}

func TestDigestNothingFailed(t *testing.T) {
	lines, err := digest(strings.NewReader("=== RUN   TestA\n    a_test.go:1: hi\n--- PASS: TestA (0.00s)\nPASS\nok  \tx\t0.1s\n"))
	require.NoError(t, err)
	assert.Empty(t, lines)
}
