package extendere2e

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/petfabric/petfabric/pkg/agent"
	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
	"github.com/petfabric/petfabric/pkg/placement"
)

// TestAgentReportReachesScheduler runs the whole chain for real: the node agent probes a
// real tgtd portal under node "probed"'s initiator name and writes its Lease to the real
// apiserver; the extender reads it; kube-scheduler places a pod with a Datera volume on
// "probed" (node "silent" has no agent). Then the target goes offline, the agent reports
// the rejected login, and a new pod stays Pending with that reason.
func TestAgentReportReachesScheduler(t *testing.T) {
	const initiator = "iqn.2024-01.io.petfabric.e2e:probed"
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: "iqn.2024-01.io.petfabric.e2e:vol", Initiators: []string{initiator}})

	e := start(t, true, "probed", "silent")
	e.backstore = "127.0.0.1:7717"
	backstores, err := agent.ParseBackstores([]byte(`{"backstores": {"127.0.0.1:7717": {"portals": ["` + tgt.Portal + `"]}}}`))
	require.NoError(t, err)
	a, err := agent.New(agent.Options{
		Node: "probed", Initiator: initiator, Backstores: backstores, StateDir: t.TempDir(),
		Leases:   e.client.CoordinationV1().Leases(releaseNS),
		Interval: 500 * time.Millisecond, TTL: 30 * time.Second, ProbeTimeout: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The agent's Lease, as the apiserver stores it.
	e.waitPortalReported(t, "probed", "127.0.0.1:7717", tgt.Portal, true)

	e.volume(t, "first", "pf-first", nil, true)
	e.pod(t, "first", "first")
	require.Equal(t, "probed", e.waitScheduled(t, "first"))

	// The target stops accepting logins: the agent's next round says so, and the
	// scheduler hears it from the extender.
	tgt.SetState("offline")
	e.volume(t, "second", "pf-second", nil, true)
	e.waitPortalReported(t, "probed", "127.0.0.1:7717", tgt.Portal, false)
	e.pod(t, "second", "second")
	msg := e.failedScheduling(t, "second",
		"1 cannot reach portal "+tgt.Portal+" of backstore 127.0.0.1:7717 (login rejected during login",
		"1 no reachability report")
	t.Logf("FailedScheduling: %s", msg)
	e.requireUnscheduled(t, "second")
}

// waitPortalReported waits until node's report Lease, as the apiserver stores it, says the
// portal of backstore is reachable (ok) or not.
func (e *env) waitPortalReported(t *testing.T, node, backstore, portal string, ok bool) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := e.client.CoordinationV1().Leases(releaseNS).Get(ctx, placement.LeaseName(node), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		nr, valid := placement.NodeReportFromLease(l)
		return valid && nr.Err == nil && nr.Report.Backstores[backstore].Portals[portal].OK == ok, nil
	}), "node %s never reported portal %s with ok=%v", node, portal, ok)
}
