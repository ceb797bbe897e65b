package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The agent's apiserver client limits are flags; bad values are refused with the flag named.
func TestAgentRejectsBadClientLimits(t *testing.T) {
	base := []string{"--node=n1", "--namespace=petfabric", "--backstores=/nonexistent"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kube-api-qps=0"}, "--kube-api-qps 0: must be positive"},
		{[]string{"--kube-api-qps=-3"}, "--kube-api-qps -3: must be positive"},
		{[]string{"--kube-api-qps=NaN"}, "--kube-api-qps NaN: must be positive"},
		{[]string{"--kube-api-burst=0"}, "--kube-api-burst 0: must be at least 1"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			require.ErrorContains(t, agentMain(append(base, tc.args...)), tc.want)
		})
	}
}
