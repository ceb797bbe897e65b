package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Bad flag values are refused before anything starts, with the flag named.
func TestRunRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kube-api-qps=0"}, "--kube-api-qps 0: must be positive"},
		{[]string{"--kube-api-qps=NaN"}, "--kube-api-qps NaN: must be positive"},
		{[]string{"--kube-api-burst=0"}, "--kube-api-burst 0: must be at least 1"},
		{[]string{"--max-report-ttl=500ms"}, "--max-report-ttl 500ms: must be at least 1s"},
		{[]string{"--requeue-trigger-coalesce=0s"}, "--requeue-trigger-coalesce 0s and --requeue-trigger-min-interval 500ms: must be positive"},
		{[]string{"--requeue-trigger-min-interval=-1s"}, "--requeue-trigger-coalesce 250ms and --requeue-trigger-min-interval -1s: must be positive"},
		{[]string{"--requeue-trigger-name="}, "--requeue-trigger-name: must not be empty"},
		{[]string{"--read-header-timeout=0s"}, "--read-header-timeout 0s: must be positive"},
		{[]string{"--read-timeout=-1s"}, "--read-timeout -1s: must be positive"},
		{[]string{"--write-timeout=0s"}, "--write-timeout 0s: must be positive"},
		{[]string{"--idle-timeout=0s"}, "--idle-timeout 0s: must be positive"},
		{[]string{"--cert-failure-grace=0s"}, "--cert-failure-grace 0s: must be positive"},
		{[]string{"--shutdown-timeout=-1s"}, "--shutdown-timeout -1s: must be positive"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			err := run(append([]string{"--namespace=petfabric"}, tc.args...))
			require.ErrorContains(t, err, tc.want)
		})
	}
}
